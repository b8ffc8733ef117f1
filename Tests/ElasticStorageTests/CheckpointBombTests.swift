import ElasticCore
import ElasticNumerics
@testable import ElasticStorage
import Foundation
import Testing

/// Checkpoints that declare far more floats than they store (a decompression bomb, or damage)
/// are refused before anything is allocated: verification and restore report them, and never
/// allocate what they declare.
@Suite struct CheckpointBombTests {
    /// Rewrites layer 0 of `step` to claim `side` × `side` weights (every tensor resized to
    /// match), keeping the stored bytes and their checksums: only the declared sizes lie.
    static func inflate(_ scratch: CheckpointScratch, step: Int, side: Int) throws {
        let path = scratch.manifest(step: step)
        var manifest = try CheckpointReader.readManifest(directory: scratch.store.directory(step: step))
        manifest.blobs[0].spec = LayerSpec(fanIn: side, fanOut: side, activation: manifest.blobs[0].spec.activation)
        for index in manifest.blobs[0].tensors.indices {
            let shape: [Int] = switch manifest.blobs[0].tensors[index].name {
            case "weight": [side, side]
            case "weight.velocity": [side * side]
            default: [side]
            }
            manifest.blobs[0].tensors[index].shape = shape
            manifest.blobs[0].tensors[index].rawBytes = shape.reduce(1, *) * 4
        }
        try replaceFile(path, with: manifest.encoded())
    }

    @Test(arguments: [32_768, 65_536])
    func aTensorDeclaringMoreThanZstdCanExpandIsRefused(side: Int) throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: 5)
        let layers = [sampleLayer(0, fanIn: 64, fanOut: 32, rng: &rng), sampleLayer(1, fanIn: 32, fanOut: 8, rng: &rng)]
        try commitModel(scratch.store, step: 10, layers: layers)
        try commitModel(scratch.store, step: 20, layers: layers)
        try Self.inflate(scratch, step: 20, side: side)

        let verification = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(verification.problems.map(\.check) == [.manifestInvalid])
        #expect(verification.problems.first?.detail.contains("more than zstd can expand") == true, "\(verification.problems)")
        // Restore falls back to the previous checkpoint.
        let loaded = try scratch.store.loadNewestValid()
        #expect(loaded.chosen?.manifest.step == 10 && loaded.skipped.map(\.name) == ["step-00000020"])
    }

    @Test func aFrameRecordingAnotherSizeIsRefusedBeforeAllocating() throws {
        let floats = [Float](repeating: 0.25, count: 4096)
        let stored = try Zstd.compress(floats.withUnsafeBytes { Array($0) }, level: 1)
        var record = CheckpointTensorRecord(name: "weight", shape: [64, 64], transform: .none, codec: .zstd, offset: 0,
                                            rawBytes: 4096 * 4, storedBytes: stored.count, rawXXH64: "0", storedXXH64: "0")
        try stored.withUnsafeBytes { try TensorDecoder.checkDeclaredSize($0, record, buffers: 1) }
        // The manifest claims 64 times the frame's size (within zstd's expansion bound).
        record.shape = [512, 512]
        record.rawBytes = 512 * 512 * 4
        do {
            try stored.withUnsafeBytes { try TensorDecoder.checkDeclaredSize($0, record, buffers: 1) }
            Issue.record("a frame of another size was accepted")
        } catch let error as TensorDecoder.Failure {
            #expect(error.kind == .decompression && error.detail.contains("the zstd frame holds 16384 bytes"), "\(error.detail)")
        }
    }

    @Test func anAllocationThisProcessCannotGetIsAnError() throws {
        // No frame to check (stored uncompressed); 2^61 bytes exceed any address space.
        let record = CheckpointTensorRecord(name: "weight", shape: [1 << 59], transform: .none, codec: .none, offset: 0,
                                            rawBytes: 1 << 61, storedBytes: 1 << 61, rawXXH64: "0", storedXXH64: "0")
        do {
            try [UInt8]().withUnsafeBytes { try TensorDecoder.checkDeclaredSize($0, record, buffers: 1) }
            Issue.record("an impossible allocation was accepted")
        } catch let error as TensorDecoder.Failure {
            #expect(error.detail.contains("cannot allocate"), "\(error.detail)")
        }
    }
}
