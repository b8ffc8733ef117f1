import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

@Suite struct CheckpointCommitTests {
    @Test func partsWrittenConcurrentlyAreCommittedTogether() async throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 5, width: 40, seed: TestSeed.make("partsWrittenConcurrentlyAreCommittedTogether"))
        let store = scratch.store
        // Two stages write their own layers into the same incoming directory at the same time,
        // like two worker processes would.
        let stage0 = Array(layers[0..<2])
        let stage1 = Array(layers[2..<5])
        async let first = Task.detached { try store.writeLayers(step: 64, part: "stage0", layers: stage0) }.value
        async let second = Task.detached { try store.writeLayers(step: 64, part: "stage1", layers: stage1, options: CheckpointWriteOptions(level: 1)) }.value
        let parts = try await [first, second]
        #expect(parts.map { $0.blobs.map(\.layer) } == [[0, 1], [2, 3, 4]])

        let summary = try store.commit(step: 64, header: sampleHeader(), layerCount: 5)
        #expect(summary.isValid && summary.isLatest && summary.step == 64)
        let loaded = try CheckpointReader.load(directory: store.directory(step: 64))
        #expect(loaded.layers == layers)
        #expect(loaded.manifest.parts.map(\.name) == ["stage0", "stage1"])
        #expect(loaded.manifest.parts.map(\.layers) == [[0, 1], [2, 3, 4]])
        #expect(loaded.manifest.parts.map(\.zstd.level) == [CheckpointWriteOptions.defaultLevel, 1])
        #expect(try store.incomingSteps().isEmpty)
    }

    @Test func manyWritersRaceToCreateTheIncomingDirectory() async throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 8, width: 8, seed: 11)
        let store = scratch.store
        try await withThrowingTaskGroup(of: CheckpointPart.self) { group in
            for layer in layers {
                group.addTask { try store.writeLayers(step: 3, part: "l\(layer.index)", layers: [layer]) }
            }
            for try await _ in group {}
        }
        try store.commit(step: 3, header: sampleHeader(), layerCount: 8)
        #expect(try CheckpointReader.load(directory: store.directory(step: 3)).layers == layers)
    }

    @Test func commitRefusesMissingLayersAndNamesThem() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 7, width: 8, seed: 12)
        try scratch.store.writeLayers(step: 10, part: "stage0", layers: [layers[0], layers[1]])
        try scratch.store.writeLayers(step: 10, part: "stage2", layers: [layers[4]])
        expectCheckpointError(.incomplete, mentioning: ["step 10", "layers 2–3, 5–6 of 7", "stage0 0–1", "stage2 4"]) {
            try scratch.store.commit(step: 10, header: sampleHeader(), layerCount: 7)
        }
        #expect(try scratch.store.list().isEmpty, "nothing becomes visible")
        #expect(scratch.store.readLatest() == nil)
        // The incoming directory survives; the missing stages can still write and commit.
        try scratch.store.writeLayers(step: 10, part: "stage1", layers: [layers[2], layers[3]])
        try scratch.store.writeLayers(step: 10, part: "stage3", layers: [layers[5], layers[6]])
        try scratch.store.commit(step: 10, header: sampleHeader(), layerCount: 7)
        #expect(try CheckpointReader.load(directory: scratch.store.directory(step: 10)).layers == layers)
    }

    @Test func commitRefusesDuplicateAndForeignLayers() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 3, width: 8, seed: 13)
        try scratch.store.writeLayers(step: 1, part: "old-plan", layers: [layers[0], layers[1]])
        try scratch.store.writeLayers(step: 1, part: "new-plan", layers: [layers[1], layers[2]])
        expectCheckpointError(.incomplete, mentioning: ["layer 1", "both part new-plan and part old-plan"]) {
            try scratch.store.commit(step: 1, header: sampleHeader(), layerCount: 3)
        }
        try scratch.store.discardIncoming(step: 1)
        #expect(try scratch.store.incomingSteps().isEmpty)

        try scratch.store.writeLayers(step: 2, part: "all", layers: layers)
        expectCheckpointError(.incomplete, mentioning: ["layer 2", "the model has 2 layers"]) {
            try scratch.store.commit(step: 2, header: sampleHeader(), layerCount: 2)
        }
    }

    @Test func commitRefusesNothingWrittenAndSecondCommits() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        expectCheckpointError(.nothingWritten, mentioning: ["step 5"]) {
            try scratch.store.commit(step: 5, header: sampleHeader(), layerCount: 1)
        }
        let layers = sampleModel(layers: 1, seed: 14)
        try commitModel(scratch.store, step: 5, layers: layers)
        expectCheckpointError(.alreadyCommitted, mentioning: ["step-00000005"]) {
            try scratch.store.commit(step: 5, header: sampleHeader(), layerCount: 1)
        }
        expectCheckpointError(.alreadyCommitted) {
            try scratch.store.writeLayers(step: 5, part: "late", layers: layers)
        }
        expectCheckpointError(.invalidArgument, mentioning: ["layer count 0"]) {
            try scratch.store.commit(step: 6, header: sampleHeader(), layerCount: 0)
        }
    }

    @Test func commitRefusesABlobThatVanishedOrChangedSize() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 2, seed: 15)
        try scratch.store.writeLayers(step: 8, part: "all", layers: layers)
        let blob = scratch.file(".incoming-00000008/layer-0001.blob")
        let bytes = fileBytes(blob)
        try replaceFile(blob, with: Array(bytes.dropLast()))
        expectCheckpointError(.blobSize, mentioning: ["layer-0001.blob", "write layer 1 again"]) {
            try scratch.store.commit(step: 8, header: sampleHeader(), layerCount: 2)
        }
        try FileManager.default.removeItem(atPath: blob)
        expectCheckpointError(.blobMissing, mentioning: ["layer-0001.blob"]) {
            try scratch.store.commit(step: 8, header: sampleHeader(), layerCount: 2)
        }
        try scratch.store.writeLayers(step: 8, part: "all", layers: layers)
        try scratch.store.commit(step: 8, header: sampleHeader(), layerCount: 2)
        #expect(CheckpointReader.verify(directory: scratch.store.directory(step: 8)).isValid)
    }

    @Test func latestOnlyMovesForward() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 1, seed: 16)
        #expect(try commitModel(scratch.store, step: 20, layers: layers).isLatest)
        let older = try commitModel(scratch.store, step: 10, layers: layers)
        #expect(!older.isLatest)
        #expect(scratch.store.readLatest() == "step-00000020")
        #expect(try commitModel(scratch.store, step: 30, layers: layers).isLatest)
        #expect(scratch.store.readLatest() == "step-00000030")
        #expect(try scratch.store.list().map(\.isLatest) == [false, false, true])
    }

    @Test func rewritingAPartReplacesIt() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let first = sampleModel(layers: 2, seed: 17)
        let second = sampleModel(layers: 2, seed: 18)
        try scratch.store.writeLayers(step: 4, part: "all", layers: first)
        try scratch.store.writeLayers(step: 4, part: "all", layers: second)
        try scratch.store.commit(step: 4, header: sampleHeader(), layerCount: 2)
        #expect(try CheckpointReader.load(directory: scratch.store.directory(step: 4)).layers == second)
    }

    /// What a crash at each point of the protocol leaves behind, replayed by hand.
    @Test func crashLeftoversAreHarmless() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 2, seed: 19)
        try commitModel(scratch.store, step: 1, layers: layers)

        // Crash while a writer wrote a blob: a temporary file, no part record.
        try scratch.store.writeLayers(step: 2, part: "stage0", layers: [layers[0]])
        try replaceFile(scratch.file(".incoming-00000002/.layer-0001.blob.tmp-999-abc"), with: [1, 2, 3])
        // Crash before the manifest: step 2 is invisible and restore uses step 1.
        #expect(try scratch.store.list().map(\.step) == [1])
        #expect(try scratch.store.newestValid().chosen?.manifest?.step == 1)
        // The writer of stage1 comes back; the commit drops the temporary file.
        try scratch.store.writeLayers(step: 2, part: "stage1", layers: [layers[1]])
        try scratch.store.commit(step: 2, header: sampleHeader(), layerCount: 2)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("step-00000002/.layer-0001.blob.tmp-999-abc")))

        // Crash after the rename, before `latest` moved: step 3 exists, `latest` names step 2.
        try commitModel(scratch.store, step: 3, layers: layers)
        try replaceFile(scratch.file("latest"), with: Array("step-00000002\n".utf8))
        try replaceFile(scratch.file("latest.tmp"), with: Array("step-000".utf8))
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen?.manifest?.step == 2)
        #expect(selection.skipped.map(\.name) == ["step-00000003"])
        // The next commit moves `latest` past both.
        try commitModel(scratch.store, step: 4, layers: layers)
        #expect(try scratch.store.newestValid().chosen?.manifest?.step == 4)
    }
}
