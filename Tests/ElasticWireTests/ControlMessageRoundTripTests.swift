import ElasticTestSupport
import ElasticCore
import ElasticWire
import Testing

@Suite("ControlMessage round trips")
struct ControlMessageRoundTripTests {
    @Test func samplesCoverEveryKind() {
        let kinds = Set(Samples.all.map(\.kind))
        #expect(kinds == Set(ControlMessage.Kind.allCases), "missing: \(Set(ControlMessage.Kind.allCases).subtracting(kinds))")
        #expect(Set(Samples.all.compactMap { if case .refused(let r) = $0 { r.code } else { nil } }) == Set(Refused.Code.allCases))
        #expect(Set(Samples.memberStatuses.map(\.state)) == Set(Membership.State.allCases))
        // Both sides of every new optional or empty-able field.
        let statuses = Samples.all.compactMap { if case .statusReply(let s) = $0 { s } else { nil } }
        #expect(statuses.contains { $0.training == nil } && statuses.contains { $0.training != nil })
        #expect(statuses.contains { ($0.training?.recent.count ?? 0) >= 2 })
        #expect(statuses.contains { $0.training != nil && $0.training?.grid == nil })
        #expect(statuses.contains { ($0.training?.grid?.stages.count ?? 0) >= 2 && !($0.training?.grid?.spares.isEmpty ?? true) })
        #expect(statuses.contains { $0.training?.grid?.spares.isEmpty == true })
        let hellos = Samples.all.compactMap { if case .hello(let h) = $0 { h } else { nil } }
        #expect(hellos.contains { $0.dataAddress.isEmpty } && hellos.contains { !$0.dataAddress.isEmpty })
        let assignments = Samples.all.compactMap { if case .assign(let a) = $0 { a } else { nil } }
        #expect(assignments.contains { $0.plan.stageCount >= 2 && $0.plan.replicas >= 2 && !$0.plan.spares.isEmpty })
        #expect(assignments.contains { $0.plan.spares.isEmpty })
        #expect(assignments.contains { $0.transfers.isEmpty } && assignments.contains { $0.transfers.count >= 2 })
        #expect(assignments.contains { $0.transfers.contains { $0.stage >= 2 } })
    }

    @Test(arguments: Samples.all)
    func roundTripsThroughTheDecoder(message: ControlMessage) throws {
        for generation in Samples.generations {
            let frame = message.frame(generation: generation)
            #expect(frame.kind == message.kind.rawValue)
            #expect(frame.generation == generation)
            let bytes = frame.encoded()
            #expect(bytes.count == Frame.headerSize + frame.payload.count)

            let frames = try decodeFrames(bytes)
            #expect(frames == [frame])
            let decodedFrame = try #require(frames.first)
            #expect(decodedFrame.generation == generation)
            #expect(try ControlMessage(frame: decodedFrame) == message)
        }
    }

    @Test func kindNumbersAreStable() {
        // These bytes are the protocol: renumbering a kind breaks every deployed peer.
        let expected: [(ControlMessage.Kind, UInt8)] = [
            (.hello, 1), (.welcome, 2), (.heartbeat, 3), (.heartbeatAck, 4), (.view, 5), (.leave, 6), (.refused, 7),
            (.caRequest, 16), (.caBundle, 17), (.bootstrapRequest, 18), (.bootstrapGranted, 19),
            (.statusRequest, 32), (.statusReply, 33), (.tokenCreate, 34), (.tokenCreated, 35), (.tokenListRequest, 36),
            (.tokenList, 37), (.tokenRevoke, 38), (.done, 39), (.nodeRevoke, 40),
            (.assign, 48), (.ready, 49), (.startStep, 50), (.stepDone, 51), (.commit, 52), (.trainingFailed, 53), (.submitJob, 54), (.stepAbandoned, 55),
            (.checkpoint, 56), (.checkpointWritten, 57),
        ]
        for (kind, raw) in expected { #expect(kind.rawValue == raw, "\(kind)") }
        #expect(expected.count == ControlMessage.Kind.allCases.count)
        let codes: [(Refused.Code, UInt16)] = [
            (.fenced, 1), (.staleGeneration, 2), (.futureGeneration, 3), (.certificateRequired, 4), (.badToken, 5), (.badRequest, 6),
            (.nameInUse, 7), (.notAuthorized, 8), (.protocolError, 9), (.internalError, 10), (.shuttingDown, 11), (.certificateRevoked, 12),
        ]
        for (code, raw) in codes { #expect(code.rawValue == raw, "\(code)") }
        #expect(codes.count == Refused.Code.allCases.count)
    }

    @Test func heartbeatBytesAreExactlyAsDocumented() {
        let bytes = ControlMessage.heartbeat(incarnation: 7).frame(generation: 0x0102_0304_0506_0708).encoded()
        #expect(bytes == [
            0, 0, 0, 18,                // length: 10 bytes of header rest + 8 of payload
            1,                          // version
            3,                          // kind: heartbeat
            1, 2, 3, 4, 5, 6, 7, 8,     // generation, big-endian
            0, 0, 0, 0, 0, 0, 0, 7,     // incarnation
        ])
        #expect(ControlMessage.heartbeatAck.frame(generation: 1).encoded() == [0, 0, 0, 10, 1, 4, 0, 0, 0, 0, 0, 0, 0, 1])
    }

    @Test func helloBytesAreExactlyAsDocumented() throws {
        let hello = ControlMessage.hello(Hello(resuming: 2, capacity: Capacity(cores: 4, memoryBytes: 256, gflops: 1.5), softwareVersion: "v1", dataAddress: "h:9"))
        #expect(hello.frame(generation: 0).payload == [
            1, 0, 0, 0, 0, 0, 0, 0, 2,                      // resuming: present, 2
            0, 0, 0, 4,                                     // cores
            0, 0, 0, 0, 0, 0, 1, 0,                         // memory
            0x3F, 0xF8, 0, 0, 0, 0, 0, 0,                   // 1.5 as an IEEE 754 double
            0, 0, 0, 2, 0x76, 0x31,                         // "v1"
            0, 0, 0, 3, 0x68, 0x3A, 0x39,                   // data address "h:9", last
        ])
        // Without a data-plane listener the address is empty, but its length is still there.
        let fresh = ControlMessage.hello(Hello(resuming: nil, capacity: Capacity(cores: 4, memoryBytes: 256, gflops: 1.5), softwareVersion: "v1"))
        let bytes = fresh.frame(generation: 0).payload
        #expect(bytes.first == 0)
        #expect(bytes.count == 1 + 20 + 6 + 4)
        #expect(bytes.suffix(10) == [0, 0, 0, 2, 0x76, 0x31, 0, 0, 0, 0])
        guard case .hello(let decoded) = try ControlMessage(frame: Frame(kind: 1, generation: 0, payload: bytes)) else {
            Issue.record("not a hello")
            return
        }
        #expect(decoded.dataAddress == "")
        // A hello of the earlier protocol (no address field) is now a truncated message.
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: Frame(kind: 1, generation: 0, payload: Array(bytes.dropLast(4)))) }
    }

    @Test func trainingControlBytesAreExactlyAsDocumented() {
        #expect(ControlMessage.ready.frame(generation: 3).encoded() == [0, 0, 0, 10, 1, 49, 0, 0, 0, 0, 0, 0, 0, 3])
        #expect(ControlMessage.startStep(step: 0x0102_0304_0506_0708).frame(generation: 0).payload == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(ControlMessage.startStep(step: 1).frame(generation: 0).kind == 50)
        #expect(ControlMessage.commit(step: 258).frame(generation: 0).payload == [0, 0, 0, 0, 0, 0, 1, 2])
        #expect(ControlMessage.commit(step: 1).frame(generation: 0).kind == 52)
        #expect(ControlMessage.trainingFailed(reason: "x").frame(generation: 0).payload == [0, 0, 0, 1, 0x78])
        #expect(ControlMessage.submitJob(json: [0x7B, 0x7D]).frame(generation: 0).payload == [0, 0, 0, 2, 0x7B, 0x7D])
        #expect(ControlMessage.stepAbandoned(step: 3, reason: "x").frame(generation: 0).payload == [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0x78])
        #expect(ControlMessage.checkpoint(step: 7).frame(generation: 0).payload == [0, 0, 0, 0, 0, 0, 0, 7])
        #expect(ControlMessage.checkpointWritten(CheckpointWritten(step: 7, stage: 1, error: "x", rawBytes: 2, storedBytes: 1, writeTime: .milliseconds(3))).frame(generation: 0).payload == [
            0, 0, 0, 0, 0, 0, 0, 7,                         // step
            0, 0, 0, 1,                                     // stage
            0, 0, 0, 1, 0x78,                               // error "x"
            0, 0, 0, 0, 0, 0, 0, 2,                         // raw bytes
            0, 0, 0, 0, 0, 0, 0, 1,                         // stored bytes
            0, 0, 0, 0, 0, 0, 0, 3,                         // write time in ms
        ])

        let report = StepReport(step: 7, lossSum: -2, samples: 64, stateChecksum: 0xA1A2_A3A4_A5A6_A7A8, computeTime: .microseconds(1_500_999))
        #expect(ControlMessage.stepDone(report).frame(generation: 0).payload == [
            0, 0, 0, 0, 0, 0, 0, 7,                         // step
            0xC0, 0, 0, 0, 0, 0, 0, 0,                      // loss sum -2.0
            0, 0, 0, 64,                                    // samples
            0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, // state checksum
            0, 0, 0, 0, 0, 0, 0x05, 0xDC,                   // compute time: 1500 whole ms
            0, 0, 0, 0, 0, 0, 0, 0,                         // gradient bytes sent
            0, 0, 0, 0, 0, 0, 0, 0,                         // received
            0, 0, 0, 0, 0, 0, 0, 0,                         // uncompressed equivalent
        ])
    }

    @Test func assignmentBytesAreExactlyAsDocumented() throws {
        let plan = Plan(generation: 9, stages: [0..<2, 2..<3], replicas: 1, nodes: [["a"], ["b"]], spares: ["c"])
        let assignment = Assignment(plan: plan, dataAddresses: ["a": "x:1", "b": ""], jobJSON: [0x7B, 0x7D], nextStep: 5)
        let bytes = ControlMessage.assign(assignment).frame(generation: 9).payload
        #expect(bytes == [
            0, 0, 0, 0, 0, 0, 0, 9,                         // plan generation
            0, 0, 0, 2,                                     // 2 stages
            0, 0, 0, 0, 0, 0, 0, 2,                         //   layers 0..<2
            0, 0, 0, 2, 0, 0, 0, 3,                         //   layers 2..<3
            0, 0, 0, 1,                                     // 1 replica
            0, 0, 0, 1, 0x61, 0, 0, 0, 3, 0x78, 0x3A, 0x31, // slot (0, 0): "a" at "x:1"
            0, 0, 0, 1, 0x62, 0, 0, 0, 0,                   // slot (1, 0): "b", no address
            0, 0, 0, 1, 0, 0, 0, 1, 0x63,                   // 1 spare: "c" (no address)
            0, 0, 0, 2, 0x7B, 0x7D,                         // job JSON
            0, 0, 0, 0, 0, 0, 0, 5,                         // next step
            0, 0, 0, 0,                                     // no transfers
            0, 0, 0, 0,                                     // no sources outside the slots
            0, 0, 0, 0,                                     // no checkpoint to restore from
            0, 0, 0, 0, 0, 0, 0, 0,                         // no step committed yet (generation 0)
        ])
        #expect(try ControlMessage(frame: Frame(kind: 48, generation: 9, payload: bytes)) == .assign(assignment))
        // An assignment of an earlier protocol (no transfer list, no source list, no restore
        // path, no commit generation) is now a truncated message.
        for cut in [8, 12, 16, 20] {
            expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: Frame(kind: 48, generation: 9, payload: Array(bytes.dropLast(cut)))) }
        }
        var restoring = assignment
        restoring.restore = "/ckpt/step-00000005"
        let restoringBytes = ControlMessage.assign(restoring).frame(generation: 9).payload
        #expect(Array(restoringBytes.suffix(31)) == [0, 0, 0, 19] + Array("/ckpt/step-00000005".utf8) + [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try ControlMessage(frame: Frame(kind: 48, generation: 9, payload: restoringBytes)) == .assign(restoring))
        var resumed = assignment
        resumed.lastCommitGeneration = 7
        let resumedBytes = ControlMessage.assign(resumed).frame(generation: 9).payload
        #expect(Array(resumedBytes.suffix(8)) == [0, 0, 0, 0, 0, 0, 0, 7])
        #expect(try ControlMessage(frame: Frame(kind: 48, generation: 9, payload: resumedBytes)) == .assign(resumed))
    }

    /// Transfers follow the next step: a count, then per transfer the stage (u32) and the
    /// source and destination node ids (strings); then a count and (node, address) for every
    /// source that holds no slot of the plan.
    @Test func assignmentTransferBytesAreExactlyAsDocumented() throws {
        let plan = Plan(generation: 9, stages: [0..<2, 2..<3], replicas: 2, nodes: [["a", "b"], ["c", "d"]], spares: ["e"])
        let without = Assignment(plan: plan, dataAddresses: ["a": "", "b": "", "c": "", "d": ""], jobJSON: [], nextStep: 5)
        var with = without
        with.transfers = [StateTransfer(stage: 0, from: "a", to: "b"), StateTransfer(stage: 1, from: "d", to: "c")]
        let before = ControlMessage.assign(without).frame(generation: 9).payload
        let bytes = ControlMessage.assign(with).frame(generation: 9).payload
        #expect(before.suffix(28) == [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes.prefix(before.count - 20)) == Array(before.dropLast(20)))
        #expect(Array(bytes.dropFirst(before.count - 20)) == [
            0, 0, 0, 2,                                     // 2 transfers
            0, 0, 0, 0,                                     //   stage 0
            0, 0, 0, 1, 0x61,                               //   from "a"
            0, 0, 0, 1, 0x62,                               //   to "b"
            0, 0, 0, 1,                                     //   stage 1
            0, 0, 0, 1, 0x64,                               //   from "d"
            0, 0, 0, 1, 0x63,                               //   to "c"
            0, 0, 0, 0,                                     // every source holds a slot
            0, 0, 0, 0,                                     // no restore path
            0, 0, 0, 0, 0, 0, 0, 0,                         // no commit generation
        ])
        let decoded = try ControlMessage(frame: Frame(kind: 48, generation: 9, payload: bytes))
        #expect(decoded == .assign(with))
        guard case .assign(let received) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        // Order is kept: the controller hands sources out in turn.
        #expect(received.transfers == with.transfers)
    }

    /// Whatever the planner asks to copy travels: random re-plans of random plans, their
    /// `Planner.transfers`, through an assignment and back.
    @Test func plannerTransfersRoundTrip() throws {
        let seed = TestSeed.make("Assignment planner transfers")
        var rng = SplitMix64(seed: seed)
        var withTransfers = 0
        for round in 0..<300 {
            let stages = 1 + rng.below(4)
            let replicas = 1 + rng.below(4)
            let ranges = (0..<stages).map { $0..<($0 + 1) }
            var fresh = 0
            func newNode() -> NodeID {
                fresh += 1
                return NodeID("n\(fresh)")
            }
            let previousNodes = (0..<stages).map { _ in (0..<replicas).map { _ in newNode() } }
            let previous = Plan(generation: 1, stages: ranges, replicas: replicas, nodes: previousNodes, spares: [])
            // Each slot keeps its node, or (keeping one holder per stage) gets a newcomer or a
            // former spare; the next plan may have a different replica count.
            let nextReplicas = 1 + rng.below(4)
            var nextNodes: [[NodeID]] = []
            for stage in 0..<stages {
                var row: [NodeID] = [previousNodes[stage][rng.below(replicas)]]
                for node in previousNodes[stage] where !row.contains(node) && row.count < nextReplicas && rng.below(2) == 0 {
                    row.append(node)
                }
                while row.count < nextReplicas { row.append(newNode()) }
                nextNodes.append(row.shuffled(using: &rng))
            }
            let next = Plan(generation: 2, stages: ranges, replicas: nextReplicas, nodes: nextNodes, spares: (0..<rng.below(3)).map { _ in newNode() })
            let transfers = try #require(Planner.transfers(from: Holders(previous), to: next), "seed \(seed), round \(round)")
            if !transfers.isEmpty { withTransfers += 1 }
            let reachable = Set(next.workers + transfers.map(\.from))
            let addresses = Dictionary(uniqueKeysWithValues: reachable.map { ($0, "\($0.value):1") })
            let sent = Assignment(plan: next, dataAddresses: addresses, jobJSON: [], nextStep: UInt64(round), transfers: transfers)
            let frame = ControlMessage.assign(sent).frame(generation: 2)
            #expect(try ControlMessage(frame: frame) == .assign(sent), "seed \(seed), round \(round): \(transfers)")
        }
        #expect(withTransfers >= 100, "seed \(seed)")
    }

    /// Slots are written stage by stage, replica by replica: `nodes[stage][replica]`.
    @Test func assignmentSlotsKeepTheirStageAndReplica() throws {
        let decoded = try ControlMessage(frame: ControlMessage.assign(Samples.assignments[0]).frame(generation: 17))
        guard case .assign(let assignment) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(assignment.plan.node(at: Plan.Slot(stage: 1, replica: 0)) == "w2")
        #expect(assignment.plan.slot(of: "w3") == Plan.Slot(stage: 0, replica: 1))
        #expect(assignment.plan.spares == ["w5", "spare-ü"])
        #expect(assignment.plan.summary == Samples.plan.summary)
        #expect(assignment.dataAddresses["w4"] == "")
    }

    /// Only slot nodes' addresses travel: an address for a spare (or any non-slot node) is
    /// dropped, and a slot node without one arrives with "". A decoded assignment therefore maps
    /// exactly the slot nodes.
    @Test func assignmentCarriesTheAddressesOfSlotNodesOnly() throws {
        var sent = Samples.assignments[0]
        sent.dataAddresses["w5"] = "spare:1"
        sent.dataAddresses["gone"] = "departed:1"
        sent.dataAddresses["w4"] = nil
        let decoded = try ControlMessage(frame: ControlMessage.assign(sent).frame(generation: 1))
        guard case .assign(let received) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(received.plan == sent.plan)
        #expect(Set(received.dataAddresses.keys) == Set(sent.plan.workers))
        #expect(received.dataAddresses["w4"] == "")
        #expect(received.dataAddresses["w1"] == "10.0.0.1:7071")
        #expect(received.jobJSON == sent.jobJSON && received.nextStep == sent.nextStep)
        #expect(received.transfers == sent.transfers && received.transfers.count == 2)
        // …and encodes to the same bytes as what was sent.
        #expect(ControlMessage.assign(received).frame(generation: 1) == ControlMessage.assign(sent).frame(generation: 1))
    }

    @Test func clusterStatusEndsWithATrainingPresenceByte() throws {
        let without = ClusterStatus(generation: 1, uptime: .zero, heartbeatInterval: .milliseconds(500), deadTimeout: .seconds(2), members: [])
        let bytes = ControlMessage.statusReply(without).frame(generation: 1).payload
        #expect(bytes == [
            0, 0, 0, 0, 0, 0, 0, 1,                         // generation
            0, 0, 0, 0, 0, 0, 0, 0,                         // uptime ms
            0, 0, 0, 0, 0, 0, 0x01, 0xF4,                   // heartbeat interval ms
            0, 0, 0, 0, 0, 0, 0x07, 0xD0,                   // dead timeout ms
            0, 0, 0, 0,                                     // no members
            0,                                              // no training
        ])
        var with = without
        with.training = TrainingStatus(job: "j", phase: "p", detail: "", committedSteps: 1, totalSteps: 2, lastLoss: 0.5,
                                       samplesPerSecond: 4, plan: "", recent: [TrainingStatus.Entry(step: 1, epoch: 0, nextSample: 8, loss: 0.5, replicasAgree: true)])
        let withBytes = ControlMessage.statusReply(with).frame(generation: 1).payload
        #expect(Array(withBytes.prefix(bytes.count - 1)) == Array(bytes.dropLast()))
        #expect(Array(withBytes[(bytes.count - 1)...]) == [1] + [
            0, 0, 0, 1, 0x6A,                               // job "j"
            0, 0, 0, 1, 0x70,                               // phase "p"
            0, 0, 0, 0,                                     // detail ""
            0, 0, 0, 0, 0, 0, 0, 1,                         // committed steps
            0, 0, 0, 0, 0, 0, 0, 2,                         // total steps
            0x3F, 0xE0, 0, 0, 0, 0, 0, 0,                   // last loss 0.5
            0x40, 0x10, 0, 0, 0, 0, 0, 0,                   // samples/s 4.0
            0, 0, 0, 0,                                     // plan ""
            0, 0, 0, 1,                                     // 1 recent entry:
            0, 0, 0, 0, 0, 0, 0, 1,                         //   step
            0, 0, 0, 0, 0, 0, 0, 0,                         //   epoch
            0, 0, 0, 0, 0, 0, 0, 8,                         //   next sample
            0x3F, 0xE0, 0, 0, 0, 0, 0, 0,                   //   loss
            1,                                              //   replicas agree
            0, 0, 0, 0,                                     // no traffic rows
            0,                                              // no plan grid
            0, 0, 0, 0,                                     // batch 0
            0,                                              // no checkpoint health
        ])
        #expect(try ControlMessage(frame: Frame(kind: 33, generation: 1, payload: withBytes)) == .statusReply(with))
    }

    @Test func thePlanGridIsAppendedAfterTheTrafficRows() throws {
        let training = TrainingStatus(
            job: "", phase: "", detail: "", committedSteps: 0, totalSteps: 0, lastLoss: 0, samplesPerSecond: 0, plan: "", recent: [],
            grid: TrainingStatus.Grid(Plan(generation: 7, stages: [0..<2, 2..<5], replicas: 2, nodes: [["a", "b"], ["c", "d"]], spares: ["e"])),
            batch: 256)
        var writer = WireWriter()
        training.encode(to: &writer)
        let prefix = 4 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4   // job … plan, no recent entries, no traffic rows
        #expect(Array(writer.bytes[prefix...]) == [
            1,                                              // a grid:
            0, 0, 0, 0, 0, 0, 0, 7,                         //   generation
            0, 0, 0, 2,                                     //   2 stages:
            0, 0, 0, 0, 0, 0, 0, 2,                         //     layers 0..<2
            0, 0, 0, 2, 0, 0, 0, 1, 0x61, 0, 0, 0, 1, 0x62, //     a b
            0, 0, 0, 2, 0, 0, 0, 5,                         //     layers 2..<5
            0, 0, 0, 2, 0, 0, 0, 1, 0x63, 0, 0, 0, 1, 0x64, //     c d
            0, 0, 0, 1, 0, 0, 0, 1, 0x65,                   //   spares: e
            0, 0, 1, 0,                                     // batch 256
            0,                                              // no checkpoint health
        ])
        var reader = WireReader(writer.bytes)
        #expect(try TrainingStatus(from: &reader) == training)
        #expect(reader.remaining == 0)
    }

    /// Before the first committed step the controller reports a NaN last loss ("none yet"): it
    /// travels bit for bit, even though NaN is never equal to itself.
    @Test func aNaNLastLossTravelsBitForBit() throws {
        for bits: UInt64 in [Double.nan.bitPattern, 0x7FF0_0000_0000_0001, 0xFFF8_0000_0000_0000] {
            var training = Samples.trainingStatuses[0]
            training.lastLoss = Double(bitPattern: bits)
            training.recent[0].loss = Double(bitPattern: bits)
            let status = ClusterStatus(generation: 1, uptime: .zero, heartbeatInterval: .milliseconds(500), deadTimeout: .seconds(2), members: [], training: training)
            let sent = ControlMessage.statusReply(status).frame(generation: 1)
            let decoded = try ControlMessage(frame: sent)
            guard case .statusReply(let received) = decoded, let receivedTraining = received.training else {
                Issue.record("decoded \(decoded)")
                continue
            }
            #expect(receivedTraining.lastLoss.bitPattern == bits)
            #expect(receivedTraining.recent[0].loss.bitPattern == bits)
            #expect(decoded.frame(generation: 1) == sent)
        }
    }

    @Test func durationsTravelInWholeMilliseconds() throws {
        let welcome = ControlMessage.welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .microseconds(1_500_900), deadTimeout: .nanoseconds(2_000_999_999)))
        let decoded = try ControlMessage(frame: welcome.frame(generation: 1))
        #expect(decoded == .welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .milliseconds(1_500), deadTimeout: .milliseconds(2_000))))

        let create = ControlMessage.tokenCreate(TokenCreate(ttl: .milliseconds(90_999), uses: nil, description: ""))
        #expect(try ControlMessage(frame: create.frame(generation: 1)) == .tokenCreate(TokenCreate(ttl: .seconds(90), uses: nil, description: "")))
    }

    @Test
    func aSubMillisecondHeartbeatIntervalStillMakesADecodableWelcome() throws {
        let welcome = ControlMessage.welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .microseconds(500), deadTimeout: .seconds(2)))
        let decoded = try ControlMessage(frame: welcome.frame(generation: 1))
        guard case .welcome(let value) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(value.heartbeatInterval > .zero)
    }

    /// Durations beyond what a `Duration` holds in nanoseconds are refused when decoding, so
    /// everything that decodes encodes back to the same bytes.
    @Test
    func decodedDurationsReencodeToTheSameMessage() throws {
        let status = payload {
            $0.write(UInt64(6))
            $0.write(UInt64(1) << 60)   // uptime in ms: decodes, but is larger than Int64.max nanoseconds
            $0.write(UInt64(500))
            $0.write(UInt64(2_000))
            $0.write(count: 0)
            $0.write(false)             // no training
        }
        let create = payload {
            $0.write(optional: UInt64(1) << 40)  // ttl in seconds
            $0.write(optional: UInt32?.none)
            $0.write("")
        }
        for (kind, bytes) in [(ControlMessage.Kind.statusReply, status), (.tokenCreate, create)] {
            #expect(throws: WireError.self, "\(kind)") { try ControlMessage(frame: frame(kind, bytes)) }
        }
        let largest = payload {
            $0.write(UInt64(6))
            $0.write(UInt64(Int64.max / 1_000_000))
            $0.write(UInt64(500))
            $0.write(UInt64(2_000))
            $0.write(count: 0)
            $0.write(false)
        }
        let message = try ControlMessage(frame: frame(.statusReply, largest))
        #expect(message.frame(generation: 5).payload == largest)

        // The same holds for a step's compute time.
        func report(milliseconds: UInt64) -> Frame {
            frame(.stepDone, payload {
                $0.write(UInt64(1)); $0.write(1.0); $0.write(UInt32(1)); $0.write(UInt64(0)); $0.write(milliseconds)
                $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(UInt64(0))
            })
        }
        for tooLong in [UInt64(Int64.max / 1_000_000) + 1, UInt64(1) << 60, .max] {
            expectWireError(.invalidValue, "compute time \(tooLong) ms") { () throws(WireError) in try ControlMessage(frame: report(milliseconds: tooLong)) }
        }
        let longest = report(milliseconds: UInt64(Int64.max / 1_000_000))
        #expect(try ControlMessage(frame: longest).frame(generation: 5) == longest)
    }
}

@Suite("WireWriter and WireReader")
struct WireCodingTests {
    @Test func integersAreBigEndian() {
        var writer = WireWriter()
        writer.write(UInt8(0xAB))
        writer.write(UInt16(0x0102))
        writer.write(UInt32(0x0304_0506))
        writer.write(UInt64(0x0708_090A_0B0C_0D0E))
        writer.write(Int64(-2))
        writer.write(true)
        writer.write(false)
        #expect(writer.bytes == [0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 1, 0])
    }

    @Test func valuesRoundTripAtTheirExtremes() throws {
        var writer = WireWriter()
        let u64s: [UInt64] = [0, 1, .max, 0x8000_0000_0000_0000]
        let i64s: [Int64] = [0, -1, .min, .max]
        let doubles: [Double] = [0, -0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, -1.5]
        for v in u64s { writer.write(v) }
        for v in i64s { writer.write(v) }
        for v in doubles { writer.write(v) }
        writer.write(UInt16.max)
        writer.write(UInt32.max)
        writer.write("héllo ✓")
        writer.write(bytes: [0, 1, 2])
        writer.write(bytes: [UInt8]())

        var reader = WireReader(writer.bytes)
        for v in u64s { #expect(try reader.read(UInt64.self) == v) }
        for v in i64s { #expect(try reader.read(Int64.self) == v) }
        for v in doubles { #expect(try reader.read(Double.self).bitPattern == v.bitPattern) }
        #expect(try reader.read(UInt16.self) == .max)
        #expect(try reader.read(UInt32.self) == .max)
        #expect(try reader.readString() == "héllo ✓")
        #expect(try reader.readBytes() == [0, 1, 2])
        #expect(try reader.readBytes() == [])
        #expect(reader.remaining == 0)
        try reader.expectEnd()
    }

    @Test func readerWorksOnASliceThatDoesNotStartAtZero() throws {
        let bytes: [UInt8] = [0xEE, 0xEE, 0xEE, 0, 0, 0, 2, 0x68, 0x69, 0x01, 0xEE]
        var reader = WireReader(bytes[3..<10])
        #expect(reader.remaining == 7)
        #expect(try reader.readString() == "hi")
        #expect(try reader.read(Bool.self) == true)
        #expect(reader.remaining == 0)
        try reader.expectEnd()
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt8.self) }
    }

    @Test func readsPastTheEndThrowTruncated() {
        var reader = WireReader([0, 0, 0])
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt32.self) }
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt64.self) }
        var short = WireReader([0, 0, 0, 5, 1, 2])
        expectWireError(.truncated) { () throws(WireError) in try short.readBytes() }
        var empty = WireReader([UInt8]())
        expectWireError(.truncated) { () throws(WireError) in try empty.read(Bool.self) }
    }

    @Test func limitsAndCountsAreCheckedBeforeReading() throws {
        var long = WireReader(payload { $0.write(String(repeating: "x", count: 65)) })
        expectWireError(.invalidValue) { () throws(WireError) in try long.readString(limit: 64) }
        var exact = WireReader(payload { $0.write(String(repeating: "x", count: 64)) })
        #expect(try exact.readString(limit: 64).count == 64)

        // A count the remaining bytes cannot hold is refused, whatever the items are.
        var counted = WireReader(payload { $0.write(count: 3); $0.write(UInt64(0)); $0.write(UInt64(0)) })
        expectWireError(.truncated) { () throws(WireError) in try counted.readCount(minimumItemSize: 8) }
        var fits = WireReader(payload { $0.write(count: 2); $0.write(UInt64(0)); $0.write(UInt64(0)) })
        #expect(try fits.readCount(minimumItemSize: 8) == 2)
        var huge = WireReader(payload { $0.write(UInt32.max) })
        expectWireError(.truncated) { () throws(WireError) in try huge.readCount(minimumItemSize: 0) }
    }

    @Test func booleansAreZeroOrOne() throws {
        var reader = WireReader([0, 1, 2, 0xFF])
        #expect(try reader.read(Bool.self) == false)
        #expect(try reader.read(Bool.self) == true)
        expectWireError(.invalidValue) { () throws(WireError) in try reader.read(Bool.self) }
    }

    @Test func expectEndRefusesLeftovers() {
        let reader = WireReader([1, 2])
        expectWireError(.trailingBytes) { () throws(WireError) in try reader.expectEnd() }
    }

    @Test func errorsDescribeThemselves() {
        let error = WireError(.frameTooLarge, "frame of 9 bytes exceeds the maximum of 8")
        #expect(error.description == "frameTooLarge: frame of 9 bytes exceeds the maximum of 8")
        #expect(WireError.Code.truncated != WireError.Code.trailingBytes)
    }
}
