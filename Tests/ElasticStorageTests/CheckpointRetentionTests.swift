import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

@Suite struct CheckpointRetentionTests {
    static func commitSteps(_ scratch: CheckpointScratch, _ steps: [Int]) throws {
        let layers = sampleModel(layers: 2, width: 8, seed: 31)
        for step in steps { try commitModel(scratch.store, step: step, layers: layers) }
    }

    static func stepNames(_ scratch: CheckpointScratch) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasPrefix("step-") }.sorted()
    }

    static func damage(_ scratch: CheckpointScratch, step: Int) throws {
        let path = scratch.blob(step: step, layer: 0)
        var bytes = fileBytes(path)
        bytes[bytes.count / 2] ^= 0xFF
        try replaceFile(path, with: bytes)
    }

    @Test func keepsExactlyTheNewestKValid() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try Self.commitSteps(scratch, [10, 20, 30, 40, 50, 60])
        let report = try scratch.store.prune(keep: 3)
        #expect(report.kept == ["step-00000060", "step-00000050", "step-00000040"])
        #expect(report.removed == ["step-00000030", "step-00000020", "step-00000010"])
        #expect(try Self.stepNames(scratch) == ["step-00000040", "step-00000050", "step-00000060"])
        #expect(try scratch.store.prune(keep: 3).removed.isEmpty, "pruning again removes nothing")
        try scratch.store.prune(keep: 1)
        #expect(try Self.stepNames(scratch) == ["step-00000060"])
        #expect(try scratch.store.newestValid().chosen?.manifest?.step == 60)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: scratch.path).contains { $0.hasPrefix(".deleting-") }))
    }

    @Test func damagedCheckpointsDoNotCountTowardK() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try Self.commitSteps(scratch, [10, 20, 30, 40, 50])
        try Self.damage(scratch, step: 50)  // newer than every valid one: kept for inspection
        try Self.damage(scratch, step: 30)  // between valid ones: removed
        let report = try scratch.store.prune(keep: 2)
        #expect(report.kept == ["step-00000040", "step-00000020"])
        #expect(report.keptInvalid == ["step-00000050"])
        #expect(report.removed == ["step-00000030", "step-00000010"])
        #expect(try Self.stepNames(scratch) == ["step-00000020", "step-00000040", "step-00000050"])
        // Restore skips the damaged latest and finds the newest valid one, which prune kept.
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen?.manifest?.step == 40)
        #expect(selection.skipped.map(\.name) == ["step-00000050"])
    }

    @Test func deletesNothingWhenNothingIsValid() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try Self.commitSteps(scratch, [10, 20, 30])
        for step in [10, 20, 30] { try Self.damage(scratch, step: step) }
        try FileManager.default.createDirectory(atPath: scratch.file(".incoming-00000005"), withIntermediateDirectories: false)
        let report = try scratch.store.prune(keep: 1)
        #expect(report.removed.isEmpty && report.removedIncoming.isEmpty && report.kept.isEmpty)
        #expect(report.note?.contains("no valid checkpoint") == true)
        #expect(try Self.stepNames(scratch) == ["step-00000010", "step-00000020", "step-00000030"])
        #expect(FileManager.default.fileExists(atPath: scratch.file(".incoming-00000005")))
        // An empty root is fine too.
        let empty = CheckpointStore(root: scratch.file("nothing-here"))
        #expect(try empty.prune(keep: 2).note == "no checkpoints")
    }

    @Test func removesStaleIncomingDirectoriesOnly() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try Self.commitSteps(scratch, [10, 20])
        let layers = sampleModel(layers: 2, width: 8, seed: 32)
        try scratch.store.writeLayers(step: 15, part: "all", layers: layers)  // abandoned
        try scratch.store.writeLayers(step: 30, part: "all", layers: layers)  // in progress
        try FileManager.default.createDirectory(atPath: scratch.file(".deleting-00000003"), withIntermediateDirectories: false)
        let report = try scratch.store.prune(keep: 5)
        #expect(Set(report.removedIncoming) == [".incoming-00000015", ".deleting-00000003"])
        #expect(try scratch.store.incomingSteps() == [30])
        try scratch.store.commit(step: 30, header: sampleHeader(), layerCount: 2)
        #expect(try scratch.store.newestValid().chosen?.manifest?.step == 30)
    }

    @Test func neverRemovesWhatLatestNames() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        try Self.commitSteps(scratch, [10, 20, 30])
        // A crash left step 30 committed but `latest` still at step 20.
        try replaceFile(scratch.file("latest"), with: Array("step-00000020\n".utf8))
        let report = try scratch.store.prune(keep: 1)
        #expect(report.kept == ["step-00000030", "step-00000020"])
        #expect(report.removed == ["step-00000010"])
        #expect(try scratch.store.newestValid().chosen?.manifest?.step == 20)
        expectCheckpointError(.invalidArgument, mentioning: ["at least 1"]) { try scratch.store.prune(keep: 0) }
    }
}
