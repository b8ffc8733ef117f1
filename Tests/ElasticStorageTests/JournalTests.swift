import ElasticCore
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

/// The controller's journal: what `load` gives back is exactly the state of the records made
/// durable, across compactions, torn writes and damaged tails.
@Suite struct JournalTests {
    final class Scratch {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("elastic-journal-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var log: String { path + "/journal.log" }
        var size: Int { (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0 }
        func truncate(to length: Int) {
            let handle = FileHandle(forWritingAtPath: log)!
            try! handle.truncate(atOffset: UInt64(length))
            try! handle.close()
        }
        func flip(at offset: Int) {
            var bytes = [UInt8](FileManager.default.contents(atPath: log)!)
            bytes[offset] ^= 0x5A
            _ = FileManager.default.createFile(atPath: log, contents: Data(bytes))
        }
    }

    /// A random but plausible history: joins, departures, generations, a job, commits, holders,
    /// checkpoints, rollbacks and token changes.
    static func randomRecord(_ rng: inout SplitMix64, step: inout Int, generation: inout UInt64) -> DurableState.Record {
        let nodes = ["w1", "w2", "w3", "w4", "w5"]
        let node = nodes[Int(rng.next() % UInt64(nodes.count))]
        switch rng.next() % 10 {
        case 0:
            generation += 1
            return .joined(DurableState.Member(node: node, incarnation: generation, address: "127.0.0.1:\(rng.next() % 60000)", cores: 2, memoryBytes: 1 << 30, gflops: 12.5, certificateSerial: String(rng.next(), radix: 16), dataAddress: "127.0.0.1:\(rng.next() % 60000)"))
        case 1:
            generation += 1
            return .departed(DurableState.Departure(node: node, incarnation: generation - 1, state: rng.next() % 2 == 0 ? "dead" : "left", atGeneration: generation, reason: "test"))
        case 2:
            generation += 1
            return .generation(generation)
        case 3:
            return .holders(rng.next() % 5 == 0 ? nil : DurableState.HolderSet(Holders(stages: [0..<2, 2..<3], nodes: [[NodeID(node)], ["w9"]])))
        case 4:
            return .checkpoint(DurableState.Checkpoint(step: step, path: "/ckpt/step-\(step)", rawBytes: rng.next() % 1000, storedBytes: rng.next() % 1000))
        case 5 where step > 3 && rng.next() % 4 == 0:
            let to = step - 3
            defer { step = to }
            return .rolledBack(toStep: to, fromStep: step)
        case 6 where rng.next() % 8 == 0:
            step = 0
            return .job(DurableState.Job(json: "{\"name\":\"job-\(rng.next() % 100)\"}", samples: 4096))
        case 7:
            return .tokens([DurableState.Token(id: "t\(rng.next() % 9)", secretSHA256: String(repeating: "ab", count: 32), createdAt: 1, expiresAt: rng.next() % 2 == 0 ? nil : 99, usesLeft: 3, uses: UInt32(rng.next() % 3), description: "a token")])
        default:
            defer { step += 1 }
            return .committed(DurableState.Step(step: step, epoch: step / 16, nextSample: (step % 16 + 1) * 256, loss: 2.3 / Double(step + 1), generation: generation, replicasAgree: true))
        }
    }

    /// Appends `count` random records in random batches, compacting now and then (small
    /// threshold); returns every record in order and the log offset after each durable batch.
    static func write(_ scratch: Scratch, count: Int, rng: inout SplitMix64, compactAfter: Int = 1500) throws -> (records: [DurableState.Record], states: [DurableState]) {
        let store = try JournalStore(directory: scratch.path, compactAfterBytes: compactAfter)
        var state = try store.load().state
        var records: [DurableState.Record] = []
        var states = [state]
        var step = state.nextStep
        var generation = state.generation
        while records.count < count {
            let batch = (0..<Int(1 + rng.next() % 4)).map { _ in randomRecord(&rng, step: &step, generation: &generation) }
            try store.append(batch)
            for record in batch { state.apply(record) }
            try store.appended(resultingIn: state)
            records += batch
            states.append(state)
        }
        return (records, states)
    }

    @Test func replayRebuildsTheStateAcrossCompactions() throws {
        var rng = SplitMix64(seed: TestSeed.make("JournalTests.replay"))
        for round in 0..<10 {
            let scratch = try Scratch()
            let (records, states) = try Self.write(scratch, count: 50 + Int(rng.next() % 200), rng: &rng)
            let loaded = try JournalStore(directory: scratch.path).load()
            #expect(loaded.dropped == nil, "round \(round)")
            #expect(loaded.state == states.last!, "round \(round)")
            #expect(loaded.state == DurableState().applying(records), "round \(round)")
            // And again after a reopen that appends more.
            let (_, moreStates) = try Self.write(scratch, count: 30, rng: &rng)
            #expect(try JournalStore(directory: scratch.path).load().state == moreStates.last!, "round \(round)")
        }
    }

    /// A crash in the middle of a write leaves a prefix of it: every cut of the log gives back
    /// exactly the state of the batches wholly before the cut.
    @Test func aTornTailIsDropped() throws {
        var rng = SplitMix64(seed: TestSeed.make("JournalTests.torn"))
        let scratch = try Scratch()
        let store = try JournalStore(directory: scratch.path, compactAfterBytes: .max)
        var state = DurableState()
        var step = 0
        var generation: UInt64 = 0
        var boundaries: [(size: Int, state: DurableState)] = [(scratch.size, state)]
        for _ in 0..<40 {
            let record = Self.randomRecord(&rng, step: &step, generation: &generation)
            try store.append([record])
            state.apply(record)
            boundaries.append((scratch.size, state))
        }
        let full = [UInt8](FileManager.default.contents(atPath: scratch.log)!)
        for _ in 0..<60 {
            let cut = 16 + Int(rng.next() % UInt64(full.count - 16))
            _ = FileManager.default.createFile(atPath: scratch.log, contents: Data(full[..<cut]))
            // The state of the records wholly before the cut.
            let loaded = try JournalStore(directory: scratch.path).load()
            let whole = boundaries.last { $0.size <= cut }!
            #expect(loaded.state == whole.state, "cut \(cut)")
            if whole.size == cut {
                #expect(loaded.dropped == nil, "cut \(cut) on a boundary")
            } else {
                #expect(loaded.dropped?.contains("torn") == true, "cut \(cut): \(loaded.dropped ?? "nothing dropped")")
            }
            // The damaged end is gone from the file: a second load drops nothing and agrees.
            let again = try JournalStore(directory: scratch.path).load()
            #expect(again.dropped == nil && again.state == loaded.state, "cut \(cut)")
        }
    }

    /// A cut inside a batch keeps exactly the records of that batch that are whole.
    @Test func aCutKeepsEveryWholeRecord() throws {
        let scratch = try Scratch()
        let store = try JournalStore(directory: scratch.path)
        let records: [DurableState.Record] = (0..<5).map {
            .committed(DurableState.Step(step: $0, epoch: 0, nextSample: ($0 + 1) * 256, loss: 1, generation: 3, replicasAgree: true))
        }
        try store.append(records)
        let full = [UInt8](FileManager.default.contents(atPath: scratch.log)!)
        var sizes: [Int] = []
        for count in 0...5 {
            let other = try Scratch()
            try JournalStore(directory: other.path).append(Array(records.prefix(count)))
            sizes.append(other.size)
        }
        for cut in 16...full.count {
            _ = FileManager.default.createFile(atPath: scratch.log, contents: Data(full[..<cut]))
            let whole = sizes.lastIndex { $0 <= cut }!
            let loaded = try JournalStore(directory: scratch.path).load()
            #expect(loaded.state.ledger.count == whole, "cut \(cut)")
            #expect((loaded.dropped != nil) == !sizes.contains(cut), "cut \(cut)")
        }
    }

    /// A flipped byte in a record fails its checksum: that record and everything after it are
    /// dropped (never applied in part), and the state is that of the records before it.
    @Test func aCorruptedTailIsDropped() throws {
        var rng = SplitMix64(seed: TestSeed.make("JournalTests.corrupt"))
        for round in 0..<30 {
            let scratch = try Scratch()
            let store = try JournalStore(directory: scratch.path, compactAfterBytes: .max)
            var states = [DurableState()]
            var sizes = [scratch.size]
            var step = 0
            var generation: UInt64 = 0
            for _ in 0..<30 {
                let record = Self.randomRecord(&rng, step: &step, generation: &generation)
                try store.append([record])
                states.append(states.last!.applying([record]))
                sizes.append(scratch.size)
            }
            let offset = 16 + Int(rng.next() % UInt64(scratch.size - 16))
            scratch.flip(at: offset)
            let damaged = sizes.lastIndex { $0 <= offset }!
            let loaded = try JournalStore(directory: scratch.path).load()
            #expect(loaded.state == states[damaged], "round \(round): flipped byte \(offset) in record \(damaged)")
            #expect(loaded.dropped != nil, "round \(round)")
            #expect(scratch.size == sizes[damaged], "round \(round): the file is cut back to the last good record")
            // Appending goes on after the last good record.
            let after = try JournalStore(directory: scratch.path)
            try after.append([.generation(999)])
            #expect(try JournalStore(directory: scratch.path).load().state == states[damaged].applying([.generation(999)]), "round \(round)")
        }
    }

    /// A crash between writing a snapshot and emptying the log: records already in the snapshot
    /// are skipped, not applied twice.
    @Test func recordsAlreadyInTheSnapshotAreSkipped() throws {
        let scratch = try Scratch()
        let store = try JournalStore(directory: scratch.path, compactAfterBytes: .max)
        let records: [DurableState.Record] = (0..<4).map {
            .committed(DurableState.Step(step: $0, epoch: 0, nextSample: ($0 + 1) * 256, loss: 1, generation: 2, replicasAgree: true))
        }
        try store.append(records)
        let oldLog = FileManager.default.contents(atPath: scratch.log)!
        let state = DurableState().applying(records)
        try store.compact(state)
        // Put the pre-snapshot log back, as if the crash came before it was replaced.
        _ = FileManager.default.createFile(atPath: scratch.log, contents: oldLog)
        let loaded = try JournalStore(directory: scratch.path).load()
        #expect(loaded.state == state)
        #expect(loaded.state.ledger.map(\.step) == [0, 1, 2, 3])
        #expect(loaded.fromSnapshot)
    }

    @Test func aDamagedSnapshotIsAnErrorThatSaysWhatToDo() throws {
        let scratch = try Scratch()
        let store = try JournalStore(directory: scratch.path)
        try store.append([.generation(3)])
        try store.compact(DurableState().applying([.generation(3)]))
        let snapshot = scratch.path + "/journal.snapshot"
        var bytes = [UInt8](FileManager.default.contents(atPath: snapshot)!)
        bytes[bytes.count - 2] ^= 1
        _ = FileManager.default.createFile(atPath: snapshot, contents: Data(bytes))
        let error = #expect(throws: JournalError.self) { try JournalStore(directory: scratch.path) }
        #expect(error?.description.contains("checksum") == true, "\(String(describing: error))")
    }

    @Test func aForeignFileIsRefused() throws {
        let scratch = try Scratch()
        _ = FileManager.default.createFile(atPath: scratch.log, contents: Data("not a journal at all".utf8))
        let error = #expect(throws: JournalError.self) { try JournalStore(directory: scratch.path) }
        #expect(error?.description.contains("not an elastic journal") == true, "\(String(describing: error))")
    }

    /// Losses that diverged (NaN, infinity) survive the JSON records.
    @Test func nonFiniteLossesRoundTrip() throws {
        let scratch = try Scratch()
        let store = try JournalStore(directory: scratch.path)
        try store.append([.committed(DurableState.Step(step: 0, epoch: 0, nextSample: 256, loss: .infinity, generation: 1, replicasAgree: true)),
                          .committed(DurableState.Step(step: 1, epoch: 0, nextSample: 512, loss: .nan, generation: 1, replicasAgree: true))])
        let ledger = try JournalStore(directory: scratch.path).load().state.ledger
        #expect(ledger[0].loss == .infinity)
        #expect(ledger[1].loss.isNaN)
    }
}
