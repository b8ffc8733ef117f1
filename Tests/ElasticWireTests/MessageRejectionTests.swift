import ElasticCore
import ElasticWire
import Testing

/// Malformed payloads: each is refused with the right code, never a trap.
@Suite("ControlMessage rejections")
struct MessageRejectionTests {
    @Test(arguments: Samples.all)
    func everyTruncationOfAPayloadIsRefusedAsTruncated(message: ControlMessage) {
        let full = message.frame(generation: 3)
        for length in 0..<full.payload.count {
            let cut = Frame(kind: full.kind, generation: full.generation, payload: Array(full.payload[..<length]))
            expectWireError(.truncated, "\(message.kind) cut to \(length) of \(full.payload.count)") { () throws(WireError) in
                try ControlMessage(frame: cut)
            }
        }
    }

    @Test(arguments: Samples.all)
    func trailingBytesAfterAPayloadAreRefused(message: ControlMessage) {
        let full = message.frame(generation: 3)
        for extra in [[0], [1, 2, 3], [UInt8](repeating: 0xFF, count: 64)] as [[UInt8]] {
            let longer = Frame(kind: full.kind, generation: full.generation, payload: full.payload + extra)
            expectWireError(.trailingBytes, "\(message.kind) + \(extra.count)") { () throws(WireError) in try ControlMessage(frame: longer) }
        }
    }

    @Test func invalidUTF8IsRefused() {
        let invalid: [[UInt8]] = [
            [0xFF],                 // never valid
            [0xC0, 0x80],           // overlong NUL
            [0xED, 0xA0, 0x80],     // a UTF-16 surrogate
            [0xE2, 0x82],           // a sequence cut short
            [0x61, 0x80, 0x62],     // a stray continuation byte
            [0xF4, 0x90, 0x80, 0x80],  // beyond U+10FFFF
        ]
        for bytes in invalid {
            let done = frame(.done, payload { $0.write(bytes: bytes) })
            expectWireError(.invalidValue, "\(bytes)") { () throws(WireError) in try ControlMessage(frame: done) }
            let view = frame(.view, payload {
                $0.write(count: 1)
                $0.write("w1")
                $0.write(UInt64(1))
                $0.write(bytes: bytes)
            })
            expectWireError(.invalidValue, "address \(bytes)") { () throws(WireError) in try ControlMessage(frame: view) }
            let hello = frame(.hello, payload {
                $0.write(false)
                Samples.capacity.encode(to: &$0)
                $0.write(bytes: bytes)
            })
            expectWireError(.invalidValue, "version \(bytes)") { () throws(WireError) in try ControlMessage(frame: hello) }
        }
    }

    @Test func aListCountTheRemainingBytesCannotHoldIsRefused() {
        // Token list items are at least 22 bytes; view entries 16; member statuses 60.
        let tokenList = frame(.tokenList, payload {
            $0.write(count: 2)
            TokenInfo(id: "abc123", createdAt: 1, expiresAt: nil, usesLeft: nil, uses: 0, description: "").encode(to: &$0)
        })
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: tokenList) }
        for count in [1, 1_000, Int(UInt32.max)] {
            let view = frame(.view, payload { $0.write(count: count); $0.write(UInt64(0)) })
            expectWireError(.truncated, "view of \(count)") { () throws(WireError) in try ControlMessage(frame: view) }
        }
        let status = frame(.statusReply, payload {
            $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(UInt64(0))
            $0.write(count: 3)  // needs at least 180 bytes; 154 follow
            $0.write(bytes: [UInt8](repeating: 0, count: 150))
        })
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: status) }
    }

    @Test func anInvalidBooleanIsRefused() {
        for flag: UInt8 in [2, 0x80, 0xFF] {
            let hello = frame(.hello, [flag] + [UInt8](repeating: 0, count: 8) + payload {
                Samples.capacity.encode(to: &$0)
                $0.write("v")
            })
            expectWireError(.invalidValue, "flag \(flag)") { () throws(WireError) in try ControlMessage(frame: hello) }
            let created = frame(.tokenCreated, payload { $0.write("t") } + [flag] + [UInt8](repeating: 0, count: 8))
            expectWireError(.invalidValue, "flag \(flag)") { () throws(WireError) in try ControlMessage(frame: created) }
        }
    }

    @Test func anUnknownRefusalCodeIsRefused() throws {
        for code: UInt16 in [0, 13, 0x100, .max] {
            let refused = frame(.refused, payload { $0.write(code); $0.write("why") })
            let error = expectWireError(.invalidValue, "code \(code)") { () throws(WireError) in try ControlMessage(frame: refused) }
            #expect(error?.message.contains("\(code)") == true)
        }
        for code in Refused.Code.allCases {
            let refused = frame(.refused, payload { $0.write(code.rawValue); $0.write("why") })
            #expect(try ControlMessage(frame: refused) == .refused(Refused(code, "why")))
        }
    }

    @Test func anUnknownMemberStateIsRefused() throws {
        func status(state: String) -> Frame {
            frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000))
                $0.write(count: 1)
                $0.write("w1")
                $0.write(UInt64(1))
                $0.write("10.0.0.1:7070")
                $0.write(state)
                $0.write(UInt64(1))
                $0.write(UInt64(10))
                Samples.capacity.encode(to: &$0)
                $0.write("")
                $0.write(false)  // no training
            })
        }
        for state in ["zombie", "", "ALIVE", "alive ", "dea"] {
            let error = expectWireError(.invalidValue, "state \(state)") { () throws(WireError) in try ControlMessage(frame: status(state: state)) }
            #expect(error?.message.contains("'\(state)'") == true)
        }
        for state in Membership.State.allCases {
            guard case .statusReply(let reply) = try ControlMessage(frame: status(state: state.rawValue)) else {
                Issue.record("not a status reply")
                continue
            }
            #expect(reply.members.map(\.state) == [state])
        }
    }

    @Test func fieldsOverTheirLimitAreRefused() {
        let cases: [(String, Frame)] = [
            ("token id", frame(.tokenRevoke, payload { $0.write(String(repeating: "a", count: 65)) })),
            ("software version", frame(.hello, payload { $0.write(false); Samples.capacity.encode(to: &$0); $0.write(String(repeating: "v", count: 129)) })),
            ("node", frame(.welcome, payload { $0.write(String(repeating: "n", count: 65)); $0.write(UInt64(1)); $0.write(UInt32(500)); $0.write(UInt32(2_000)) })),
            ("certificate", frame(.caBundle, payload { $0.write(bytes: [UInt8](repeating: 0, count: (64 << 10) + 1)) })),
            ("csr", frame(.bootstrapRequest, payload { $0.write("t"); $0.write("n"); $0.write(bytes: [UInt8](repeating: 0, count: (16 << 10) + 1)) })),
            ("done message", frame(.done, payload { $0.write(String(repeating: "m", count: 4097)) })),
            // A length field claiming more than the limit is refused before the bytes are needed.
            ("claimed certificate", frame(.caBundle, payload { $0.write(UInt32.max) })),
            ("data address", frame(.hello, payload { $0.write(false); Samples.capacity.encode(to: &$0); $0.write("v"); $0.write(String(repeating: "a", count: 257)) })),
            ("job", frame(.submitJob, payload { $0.write(bytes: [UInt8](repeating: 0x20, count: (256 << 10) + 1)) })),
            ("claimed job", frame(.submitJob, payload { $0.write(UInt32.max) })),
            ("failure reason", frame(.trainingFailed, payload { $0.write(String(repeating: "r", count: 4097)) })),
            ("training phase", frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000)); $0.write(count: 0)
                $0.write(true); $0.write("job"); $0.write(String(repeating: "p", count: 33)); $0.write("")
                $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(0.0); $0.write(0.0); $0.write(""); $0.write(count: 0)
            })),
            ("assignment node", frame(.assign, AssignmentBytes(nodes: [[String(repeating: "n", count: 65)]]).bytes)),
            ("assignment address", frame(.assign, AssignmentBytes(nodes: [["a"]], address: String(repeating: "x", count: 257)).bytes)),
            ("assignment job", frame(.assign, AssignmentBytes(nodes: [["a"]], jobJSON: [UInt8](repeating: 0x20, count: (256 << 10) + 1)).bytes)),
        ]
        for (what, bad) in cases {
            expectWireError(.invalidValue, "\(what)") { () throws(WireError) in try ControlMessage(frame: bad) }
        }
    }

    @Test func fieldsAtTheirLimitAreAccepted() throws {
        let hello = Hello(resuming: nil, capacity: Samples.capacity, softwareVersion: String(repeating: "v", count: 128), dataAddress: String(repeating: "a", count: 256))
        #expect(try ControlMessage(frame: ControlMessage.hello(hello).frame(generation: 1)) == .hello(hello))
        let job = ControlMessage.submitJob(json: [UInt8](repeating: 0x20, count: 256 << 10))
        #expect(try ControlMessage(frame: job.frame(generation: 1)) == job)
        let node = NodeID(String(repeating: "n", count: 64))
        let assignment = Assignment(plan: Plan(generation: 1, stages: [0..<1], replicas: 1, nodes: [[node]], spares: []),
                                    dataAddresses: [node: String(repeating: "x", count: 256)], jobJSON: [UInt8](repeating: 0x20, count: 256 << 10), nextStep: 0)
        #expect(try ControlMessage(frame: ControlMessage.assign(assignment).frame(generation: 1)) == .assign(assignment))
    }

    @Test func anInvalidTrainingPresenceByteIsRefused() {
        for flag: UInt8 in [2, 0x80, 0xFF] {
            let status = frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000)); $0.write(count: 0)
                $0.write(flag)
            })
            expectWireError(.invalidValue, "flag \(flag)") { () throws(WireError) in try ControlMessage(frame: status) }
        }
        // "Present" with nothing after it is a truncated message; "absent" followed by a
        // status is one with trailing bytes.
        let training = payload { Samples.trainingStatuses[1].encode(to: &$0) }
        let header = payload { $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000)); $0.write(count: 0) }
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: frame(.statusReply, header + [1])) }
        expectWireError(.trailingBytes) { () throws(WireError) in try ControlMessage(frame: frame(.statusReply, header + [0] + training)) }
        #expect(throws: Never.self) { try ControlMessage(frame: frame(.statusReply, header + [1] + training)) }
    }

    @Test func checkpointHealthWithMoreFailuresInARowThanInAllIsRefused() {
        var health = Samples.trainingStatuses[3].checkpoints!
        health.consecutiveFailures = health.failures + 1
        var writer = WireWriter()
        health.encode(to: &writer)
        var reader = WireReader(writer.bytes)
        expectWireError(.invalidValue) { () throws(WireError) in _ = try TrainingStatus.CheckpointHealth(from: &reader) }
    }

    @Test func aRecentEntriesCountTheBytesCannotHoldIsRefused() {
        // Entries are exactly 33 bytes: 8 + 8 + 8 + 8 + 1.
        func status(count: Int, entryBytes: Int) -> Frame {
            frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000)); $0.write(count: 0)
                $0.write(true); $0.write("j"); $0.write("p"); $0.write("")
                $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(0.0); $0.write(0.0); $0.write("")
                $0.write(count: count)
            } + [UInt8](repeating: 0, count: entryBytes))
        }
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: status(count: 2, entryBytes: 65)) }
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: status(count: Int(UInt32.max), entryBytes: 33)) }
        // (66 bytes of entries, then an empty traffic list, no grid, batch 0, no checkpoint health.)
        #expect(throws: Never.self) { try ControlMessage(frame: status(count: 2, entryBytes: 76)) }
        // A replicas-agree flag other than 0 or 1.
        var bad = status(count: 1, entryBytes: 33)
        bad.payload[bad.payload.count - 1] = 2
        expectWireError(.invalidValue) { () throws(WireError) in try ControlMessage(frame: bad) }
    }

    @Test func aPlanGridWithAnEmptyStageOrAnImpossibleCountIsRefused() {
        func status(_ grid: (inout WireWriter) -> Void) -> Frame {
            frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000)); $0.write(count: 0)
                $0.write(true); $0.write("j"); $0.write("p"); $0.write("")
                $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(0.0); $0.write(0.0); $0.write("")
                $0.write(count: 0); $0.write(count: 0)
                grid(&$0)
            })
        }
        // An empty layer range.
        expectWireError(.invalidValue) { () throws(WireError) in
            try ControlMessage(frame: status { $0.write(true); $0.write(UInt64(1)); $0.write(count: 1); $0.write(UInt32(3)); $0.write(UInt32(3)); $0.write(count: 0); $0.write(count: 0); $0.write(UInt32(1)) })
        }
        // More stages, nodes or spares than the bytes can hold.
        expectWireError(.truncated) { () throws(WireError) in
            try ControlMessage(frame: status { $0.write(true); $0.write(UInt64(1)); $0.write(count: Int(UInt32.max)) })
        }
        expectWireError(.truncated) { () throws(WireError) in
            try ControlMessage(frame: status { $0.write(true); $0.write(UInt64(1)); $0.write(count: 1); $0.write(UInt32(0)); $0.write(UInt32(1)); $0.write(count: 1_000) })
        }
        expectWireError(.truncated) { () throws(WireError) in
            try ControlMessage(frame: status { $0.write(true); $0.write(UInt64(1)); $0.write(count: 0); $0.write(count: 1_000) })
        }
        // A grid flag other than 0 or 1, and a missing batch.
        expectWireError(.invalidValue) { () throws(WireError) in try ControlMessage(frame: status { $0.write(UInt8(2)); $0.write(UInt32(1)) }) }
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: status { $0.write(false) }) }
        #expect(throws: Never.self) { try ControlMessage(frame: status { $0.write(false); $0.write(UInt32(256)); $0.write(false) }) }
    }

    @Test func aNonFiniteLossSumIsRefused() throws {
        for loss in [Double.nan, .infinity, -.infinity, Double(bitPattern: 0x7FF0_0000_0000_0001)] {
            let report = frame(.stepDone, payload {
                $0.write(UInt64(1)); $0.write(loss); $0.write(UInt32(1)); $0.write(UInt64(0)); $0.write(UInt64(10))
            })
            expectWireError(.invalidValue, "loss \(loss)") { () throws(WireError) in try ControlMessage(frame: report) }
        }
        for loss in [0, -0.0, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude] as [Double] {
            let report = StepReport(step: 1, lossSum: loss, samples: 1, stateChecksum: 0, computeTime: .zero)
            let decoded = try ControlMessage(frame: ControlMessage.stepDone(report).frame(generation: 1))
            guard case .stepDone(let value) = decoded else {
                Issue.record("decoded \(decoded)")
                continue
            }
            #expect(value.lossSum.bitPattern == loss.bitPattern)
        }
    }

    @Test func impossibleValuesAreRefused() {
        let zeroHeartbeat = frame(.welcome, payload { $0.write("w"); $0.write(UInt64(1)); $0.write(UInt32(0)); $0.write(UInt32(2_000)) })
        expectWireError(.invalidValue) { () throws(WireError) in try ControlMessage(frame: zeroHeartbeat) }
        for gflops in [Double.nan, .infinity, -.infinity, -1, -.leastNonzeroMagnitude] {
            let hello = frame(.hello, payload { $0.write(false); $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(gflops); $0.write("v") })
            expectWireError(.invalidValue, "gflops \(gflops)") { () throws(WireError) in try ControlMessage(frame: hello) }
        }
    }

    @Test func messagesWithoutFieldsRefuseAnyPayload() {
        for kind in [ControlMessage.Kind.heartbeatAck, .caRequest, .statusRequest, .tokenListRequest, .ready] {
            #expect(throws: Never.self) { try ControlMessage(frame: frame(kind, [])) }
            expectWireError(.trailingBytes, "\(kind)") { () throws(WireError) in try ControlMessage(frame: frame(kind, [0])) }
        }
    }
}

/// Builds an assignment payload field by field, so that rejections can break one thing at a time.
struct AssignmentBytes {
    var generation: UInt64 = 3
    var stages: [(UInt32, UInt32)]? = nil
    var stageCount: UInt32? = nil
    var replicas: UInt32? = nil
    var nodes: [[String]]
    var address = "h:1"
    var spares: [String] = []
    var spareCount: UInt32? = nil
    var jobJSON: [UInt8] = [0x7B, 0x7D]
    var nextStep: UInt64 = 0
    /// (stage, from, to) per transfer.
    var transfers: [(UInt32, String, String)] = []
    var transferCount: UInt32? = nil
    /// (node, address) of sources outside the slots.
    var outside: [(String, String)] = []
    var restore = ""
    var lastCommitGeneration: UInt64 = 0

    /// Whether Assignment's up-front slot check (stages × replicas slots of at least 8 bytes
    /// each in the bytes after the replica count) refuses `payload`, a well-formed assignment
    /// cut short (as truncated, like every other count the remaining bytes cannot hold).
    static func slotCheckRefuses(_ payload: [UInt8]) -> Bool {
        var reader = WireReader(payload)
        guard (try? reader.read(UInt64.self)) != nil, let stages = try? reader.read(UInt32.self),
              (try? reader.readRaw(8 * Int(stages))) != nil, let replicas = try? reader.read(UInt32.self)
        else { return false }
        return Int(stages) * Int(replicas) > reader.remaining / 8
    }

    var bytes: [UInt8] {
        // By default, one layer per stage.
        let stageList = stages ?? (0..<nodes.count).map { (UInt32($0), UInt32($0 + 1)) }
        return payload { writer in
            writer.write(generation)
            writer.write(stageCount ?? UInt32(stageList.count))
            for (lower, upper) in stageList {
                writer.write(lower)
                writer.write(upper)
            }
            writer.write(replicas ?? UInt32(nodes.first?.count ?? 0))
            for node in nodes.joined() {
                writer.write(node)
                writer.write(address)
            }
            writer.write(spareCount ?? UInt32(spares.count))
            for spare in spares { writer.write(spare) }
            writer.write(bytes: jobJSON)
            writer.write(nextStep)
            writer.write(transferCount ?? UInt32(transfers.count))
            for (stage, from, to) in transfers {
                writer.write(stage)
                writer.write(from)
                writer.write(to)
            }
            writer.write(UInt32(outside.count))
            for (node, address) in outside {
                writer.write(node)
                writer.write(address)
            }
            writer.write(restore)
            writer.write(lastCommitGeneration)
        }
    }
}

@Suite("Assignment rejections")
struct AssignmentRejectionTests {
    func decode(_ bytes: AssignmentBytes) throws(WireError) -> Assignment {
        let message = try ControlMessage(frame: frame(.assign, bytes.bytes))
        guard case .assign(let assignment) = message else { preconditionFailure("decoded \(message)") }
        return assignment
    }

    @Test func theHandWrittenBaselineDecodes() throws {
        let assignment = try decode(AssignmentBytes(nodes: [["a", "b"], ["c", "d"]], spares: ["e"]))
        #expect(assignment.plan == Plan(generation: 3, stages: [0..<1, 1..<2], replicas: 2, nodes: [["a", "b"], ["c", "d"]], spares: ["e"]))
        #expect(assignment.dataAddresses == ["a": "h:1", "b": "h:1", "c": "h:1", "d": "h:1"])
        let uneven = try decode(AssignmentBytes(stages: [(0, 7), (7, 8), (8, 100)], nodes: [["a"], ["b"], ["c"]]))
        #expect(uneven.plan.stages == [0..<7, 7..<8, 8..<100])
    }

    @Test func stagesMustStartAtLayerZeroAndBeContiguous() {
        let cases: [(String, [(UInt32, UInt32)])] = [
            ("starts at 1", [(1, 3), (3, 5)]),
            ("starts at UInt32.max", [(UInt32.max, UInt32.max)]),
            ("gap", [(0, 3), (4, 5)]),
            ("overlap", [(0, 3), (2, 5)]),
            ("repeated", [(0, 3), (0, 3)]),
            ("out of order", [(3, 5), (0, 3)]),
            ("second starts at 0", [(0, 3), (0, 5)]),
        ]
        for (what, stages) in cases {
            let bytes = AssignmentBytes(stages: stages, nodes: stages.indices.map { ["n\($0)"] })
            expectWireError(.invalidValue, "\(what)") { () throws(WireError) in try decode(bytes) }
        }
    }

    @Test func anEmptyOrBackwardStageIsRefused() {
        for stages in [[(0, 0)], [(0, 3), (3, 3)], [(0, 3), (3, 2)], [(0, 3), (3, 0)]] as [[(UInt32, UInt32)]] {
            let bytes = AssignmentBytes(stages: stages, nodes: stages.indices.map { ["n\($0)"] })
            expectWireError(.invalidValue, "\(stages)") { () throws(WireError) in try decode(bytes) }
        }
    }

    @Test func aPlanWithoutSlotsIsRefused() {
        // No stages at all.
        expectWireError(.invalidValue, "0 stages") { () throws(WireError) in try decode(AssignmentBytes(stages: [], replicas: 1, nodes: [])) }
        // Stages, but zero replicas.
        expectWireError(.invalidValue, "0 replicas") { () throws(WireError) in try decode(AssignmentBytes(replicas: 0, nodes: [[], []])) }
        // Both.
        expectWireError(.invalidValue, "0×0") { () throws(WireError) in try decode(AssignmentBytes(stages: [], replicas: 0, nodes: [])) }
    }

    @Test func aNodeInTwoPlacesIsRefused() {
        let cases: [(String, AssignmentBytes)] = [
            ("two slots of a stage", AssignmentBytes(nodes: [["a", "a"]])),
            ("two stages", AssignmentBytes(nodes: [["a", "b"], ["c", "a"]])),
            ("a slot and a spare", AssignmentBytes(nodes: [["a"], ["b"]], spares: ["c", "b"])),
            ("two spares", AssignmentBytes(nodes: [["a"]], spares: ["s", "s"])),
        ]
        for (what, bytes) in cases {
            let error = expectWireError(.invalidValue, "\(what)") { () throws(WireError) in try decode(bytes) }
            #expect(error?.message.contains("twice") == true, "\(what)")
        }
        // Case matters…
        #expect(throws: Never.self) { try decode(AssignmentBytes(nodes: [["a", "A"]])) }
        // …but ids compare as Swift strings, so two spellings of the same text (precomposed and
        // combining accent) are one node. (Valid node ids are ASCII; this only pins that such a
        // plan is refused rather than decoded into a map that loses a slot's address.)
        expectWireError(.invalidValue) { () throws(WireError) in try decode(AssignmentBytes(nodes: [["é", "e\u{301}"]])) }
    }

    /// Every slot takes at least 8 bytes (two length fields): a stages × replicas product the
    /// rest of the message cannot hold is refused before any slot is read or allocated.
    @Test func aPlanClaimingMoreSlotsThanTheBytesHoldIsRefused() {
        // Two 12-byte slots, then 38 bytes of spares, job, next step, transfers, sources,
        // restore path and commit generation: 62 bytes hold at most 7 slots by the 8-byte measure.
        let cases: [(String, AssignmentBytes)] = [
            ("1×8", AssignmentBytes(replicas: 8, nodes: [["a", "b"]])),
            ("1×1000", AssignmentBytes(replicas: 1_000, nodes: [["a", "b"]])),
            ("1×\(UInt32.max)", AssignmentBytes(replicas: .max, nodes: [["a", "b"]])),
            ("1000×\(UInt32.max)", AssignmentBytes(stages: (0..<1_000).map { (UInt32($0), UInt32($0 + 1)) }, replicas: .max, nodes: [["a"]])),
        ]
        for (shape, bytes) in cases {
            #expect(AssignmentBytes.slotCheckRefuses(bytes.bytes), "\(shape)")
            do {
                let assignment = try decode(bytes)
                Issue.record("\(shape) decoded as \(assignment)")
            } catch {
                // Refused by the up-front check, which names the shape, not by running out of
                // bytes halfway through the slots.
                #expect(error.message.contains("\(shape) slots"), "\(shape): \(error)")
                #expect(error.code == .truncated, "\(shape)")
            }
        }
        // A count that passes the 8-byte estimate but still runs out of bytes fails on the read
        // that runs out.
        let slightlyShort = AssignmentBytes(replicas: 3, nodes: [["a", "b"]])
        #expect(!AssignmentBytes.slotCheckRefuses(slightlyShort.bytes))
        expectWireError(.truncated, "1×3") { () throws(WireError) in try decode(slightlyShort) }
        // A stage count the bytes cannot hold is refused by the list count check.
        expectWireError(.truncated, "stage count") { () throws(WireError) in try decode(AssignmentBytes(stageCount: UInt32.max, nodes: [["a"]])) }
        expectWireError(.truncated, "spare count") { () throws(WireError) in try decode(AssignmentBytes(nodes: [["a"]], spareCount: 1_000)) }
    }

    /// Like every other "more items than bytes" count (stages, spares, transfers, list items,
    /// floats), a slot count the bytes cannot hold is a truncated message, so a well-formed
    /// assignment cut anywhere is refused as truncated.
    @Test
    func aSlotCountTheBytesCannotHoldIsTruncated() throws {
        expectWireError(.truncated) { () throws(WireError) in try decode(AssignmentBytes(replicas: 8, nodes: [["a", "b"]])) }
        let full = ControlMessage.assign(Samples.assignments[0]).frame(generation: 1).payload
        for length in 0..<full.count {
            expectWireError(.truncated, "cut to \(length)") { () throws(WireError) in try ControlMessage(frame: frame(.assign, Array(full[..<length]))) }
        }
        // Empty plans stay invalid values.
        expectWireError(.invalidValue) { () throws(WireError) in try decode(AssignmentBytes(replicas: 0, nodes: [[], []])) }
    }

    /// The slot check counts 8 bytes per slot; a message with exactly that (empty node ids and
    /// addresses) still passes it and then needs the rest of its fields.
    @Test func theSlotCheckIsExactAtEightBytesPerSlot() {
        let slots = payload { writer in
            writer.write(UInt64(1)); writer.write(count: 1); writer.write(UInt32(0)); writer.write(UInt32(1)); writer.write(UInt32(2))
        }
        // Two empty slots: exactly 16 bytes. Then the spares count is missing: truncated.
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: frame(.assign, slots + [UInt8](repeating: 0, count: 16))) }
        // One byte fewer: the plan cannot fit, and says so before reading the slots.
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: frame(.assign, slots + [UInt8](repeating: 0, count: 15))) }
    }
}

/// The transfer list at the end of an assignment: every transfer copies a stage of the plan
/// between two of its slot nodes.
@Suite("Assignment transfer rejections")
struct AssignmentTransferRejectionTests {
    /// 2 stages × 2 replicas (`a b` / `c d`) and spares `s`, `t`.
    func bytes(_ transfers: [(UInt32, String, String)], count: UInt32? = nil) -> AssignmentBytes {
        AssignmentBytes(nodes: [["a", "b"], ["c", "d"]], spares: ["s", "t"], transfers: transfers, transferCount: count)
    }

    func decode(_ bytes: AssignmentBytes) throws(WireError) -> Assignment {
        try decode(bytes.bytes)
    }

    func decode(_ payload: [UInt8]) throws(WireError) -> Assignment {
        let message = try ControlMessage(frame: frame(.assign, payload))
        guard case .assign(let assignment) = message else { preconditionFailure("decoded \(message)") }
        return assignment
    }

    @Test func transfersBetweenSlotNodesDecode() throws {
        #expect(try decode(bytes([])).transfers == [])
        let valid: [(UInt32, String, String)] = [(0, "a", "b"), (1, "d", "c"), (0, "b", "a"), (1, "c", "d")]
        let decoded = try decode(bytes(valid))
        #expect(decoded.transfers == valid.map { StateTransfer(stage: Int($0.0), from: NodeID($0.1), to: NodeID($0.2)) })
        // The decoder checks membership in the plan, not which stage each node holds: a copy
        // across stages, and the same copy twice, are the controller's business.
        #expect(try decode(bytes([(1, "a", "d")])).transfers == [StateTransfer(stage: 1, from: "a", to: "d")])
        #expect(try decode(bytes([(0, "a", "b"), (0, "a", "b")])).transfers.count == 2)
    }

    /// A source outside the slots (a spare that held the stage, a member leaving gracefully)
    /// comes with its address; a copy *to* it, or from an unlisted one, is refused, and the list
    /// names each node once and no slot.
    @Test func aTransferFromAListedSourceDecodes() throws {
        var listed = bytes([(1, "s", "c"), (0, "gone", "a")])
        listed.outside = [("gone", "10.0.0.9:7001"), ("s", "10.0.0.8:7001")]
        let decoded = try decode(listed)
        #expect(decoded.transfers == [StateTransfer(stage: 1, from: "s", to: "c"), StateTransfer(stage: 0, from: "gone", to: "a")])
        #expect(decoded.dataAddresses["gone"] == "10.0.0.9:7001" && decoded.dataAddresses["s"] == "10.0.0.8:7001")
        var toSource = bytes([(0, "a", "gone")])
        toSource.outside = [("gone", "x:1")]
        var twice = bytes([(0, "gone", "a")])
        twice.outside = [("gone", "x:1"), ("gone", "x:2")]
        var slotListed = bytes([(0, "a", "b")])
        slotListed.outside = [("a", "x:1")]
        for (label, candidate) in [("to a listed source", toSource), ("listed twice", twice), ("a slot listed", slotListed)] {
            expectWireError(.invalidValue, "\(label)") { () throws(WireError) in try decode(candidate) }
        }
    }

    @Test func aTransferToOrFromASpareIsRefused() {
        let cases: [(UInt32, String, String)] = [(0, "a", "s"), (0, "s", "a"), (1, "t", "d"), (1, "c", "t"), (0, "s", "t")]
        for transfer in cases {
            expectWireError(.invalidValue, "\(transfer)") { () throws(WireError) in try decode(bytes([transfer])) }
            // Also after a valid one.
            expectWireError(.invalidValue, "after a valid one: \(transfer)") { () throws(WireError) in try decode(bytes([(0, "a", "b"), transfer])) }
        }
    }

    @Test func aTransferToOrFromAnUnknownNodeIsRefused() {
        let cases: [(UInt32, String, String)] = [
            (0, "a", "x"), (0, "x", "a"), (1, "zz", "yy"),
            (0, "", "a"), (0, "a", ""),                     // the empty id is no node of this plan
            (0, "A", "b"), (0, "a", "b "),                  // ids compare exactly
            (0, "a", "h:1"),                                // an address is not a node
        ]
        for transfer in cases {
            expectWireError(.invalidValue, "\(transfer)") { () throws(WireError) in try decode(bytes([transfer])) }
        }
    }

    @Test func aTransferFromANodeToItselfIsRefused() {
        for transfer: (UInt32, String, String) in [(0, "a", "a"), (1, "d", "d"), (0, "b", "b")] {
            expectWireError(.invalidValue, "\(transfer)") { () throws(WireError) in try decode(bytes([transfer])) }
        }
        // Not even a spare to itself, and not when the stage is out of range too.
        expectWireError(.invalidValue) { () throws(WireError) in try decode(bytes([(0, "s", "s")])) }
        expectWireError(.invalidValue) { () throws(WireError) in try decode(bytes([(9, "a", "a")])) }
    }

    @Test func aTransferOfAStageOutsideThePlanIsRefused() throws {
        for stage: UInt32 in [2, 3, 0x8000_0000, .max] {
            expectWireError(.invalidValue, "stage \(stage)") { () throws(WireError) in try decode(bytes([(stage, "a", "b")])) }
        }
        // The last stage is in range; one past it of a one-stage plan is not.
        #expect(try decode(bytes([(1, "c", "d")])).transfers.map(\.stage) == [1])
        let single = AssignmentBytes(nodes: [["a", "b"]], transfers: [(1, "a", "b")])
        expectWireError(.invalidValue) { () throws(WireError) in try decode(single) }
    }

    /// Each transfer takes at least 12 bytes (a stage and two lengths): a count the bytes left
    /// cannot hold is refused before any transfer is read.
    @Test func aTransferCountTheBytesCannotHoldIsTruncated() throws {
        let one: [(UInt32, String, String)] = [(0, "a", "b")]  // 14 bytes
        // (14 bytes of transfer and 16 after the list: 30 bytes pass the check for 2.)
        for count: UInt32 in [3, 1_000, 0x1000_0000, .max] {
            let error = expectWireError(.truncated, "count \(count)") { () throws(WireError) in try decode(bytes(one, count: count)) }
            #expect(error?.message.contains("\(count)") == true, "count \(count): \(String(describing: error))")
        }
        for count: UInt32 in [2, 5, .max] {
            expectWireError(.truncated, "count \(count), no transfers") { () throws(WireError) in try decode(bytes([], count: count)) }
        }
        // Exactly 12 bytes per transfer pass the count check; empty ids are then no nodes.
        let empty = bytes([(0, "", ""), (0, "", "")])
        expectWireError(.invalidValue) { () throws(WireError) in try decode(empty) }
        // A count below the transfers that follow: the rest is read as the source list, which
        // then names a slot.
        expectWireError(.invalidValue) { () throws(WireError) in try decode(bytes([(0, "a", "b"), (1, "c", "d")], count: 1)) }
    }

    /// A count that passes the 12-byte estimate but whose transfers run out of bytes fails on
    /// the read that runs out, and so does every cut inside the list.
    @Test func aTruncatedTransferIsRefused() {
        // 14 bytes of transfer and 10 of a second: 24 bytes pass the count check for 2.
        let full = bytes([(0, "a", "b"), (1, "c", "d")]).bytes
        expectWireError(.truncated) { () throws(WireError) in try decode(Array(full.dropLast(4))) }
        let listStart = full.count - 16 - 28
        for length in listStart..<full.count {
            expectWireError(.truncated, "cut to \(length) of \(full.count)") { () throws(WireError) in try decode(Array(full[..<length])) }
        }
        // A node id's length past the end (within its 64-byte limit), and one over the limit.
        // (Everything up to the transfer count of 1: the source count and restore path go.)
        // (…and the commit generation.)
        let header = Array(bytes([], count: 1).bytes.dropLast(16))
        let pastEnd = header + payload { $0.write(UInt32(0)); $0.write(UInt32(60)); $0.write(UInt32(0)) } + Array("a".utf8)
        expectWireError(.truncated) { () throws(WireError) in try decode(pastEnd) }
        let overLimit = header + payload { $0.write(UInt32(0)); $0.write(UInt32.max); $0.write(UInt32(0)) }
        expectWireError(.invalidValue) { () throws(WireError) in try decode(overLimit) }
        let tooLong = bytes([(0, String(repeating: "a", count: 65), "b")])
        expectWireError(.invalidValue) { () throws(WireError) in try decode(tooLong) }
        // Invalid UTF-8 in a node id.
        let invalid = header + payload { $0.write(UInt32(0)); $0.write(bytes: [0xFF]); $0.write("a") }
        expectWireError(.invalidValue) { () throws(WireError) in try decode(invalid) }
    }
}
