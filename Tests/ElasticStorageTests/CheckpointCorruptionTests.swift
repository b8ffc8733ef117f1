import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

/// Damage one checkpoint, then check that verify names the right check and that restore falls
/// back to the previous valid checkpoint.
@Suite struct CheckpointCorruptionTests {
    /// Steps 10 and 20 committed (20 is `latest`), same model.
    static func twoCheckpoints(_ scratch: CheckpointScratch) throws -> [LayerCheckpoint] {
        var rng = SplitMix64(seed: 21)
        let layers = [sampleLayer(0, fanIn: 64, fanOut: 32, rng: &rng), sampleLayer(1, fanIn: 32, fanOut: 8, rng: &rng)]
        try commitModel(scratch.store, step: 10, layers: layers)
        try commitModel(scratch.store, step: 20, layers: layers)
        return layers
    }

    /// Restore must skip step 20 (for a reason mentioning `reason`) and choose step 10.
    static func expectFallback(_ scratch: CheckpointScratch, layers: [LayerCheckpoint], reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen?.manifest?.step == 10, sourceLocation: sourceLocation)
        #expect(selection.skipped.map(\.name) == ["step-00000020"], sourceLocation: sourceLocation)
        #expect(selection.skipped.first?.reason.contains(reason) == true, "\(selection.skipped)", sourceLocation: sourceLocation)
        let loaded = try scratch.store.loadNewestValid()
        #expect(loaded.chosen?.manifest.step == 10, sourceLocation: sourceLocation)
        #expect(loaded.chosen?.layers == layers, sourceLocation: sourceLocation)
        #expect(loaded.skipped.map(\.name) == ["step-00000020"], sourceLocation: sourceLocation)
    }

    @Test func flippedByteIsACompressedChecksumMismatch() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = try Self.twoCheckpoints(scratch)
        let manifest = try CheckpointReader.readManifest(directory: scratch.store.directory(step: 20))
        let weight = manifest.blobs[1].tensors[0]
        let path = scratch.blob(step: 20, layer: 1)
        var bytes = fileBytes(path)
        bytes[weight.offset + weight.storedBytes / 2] ^= 0x10
        try replaceFile(path, with: bytes)

        let verification = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(!verification.isValid)
        #expect(verification.problems == [CheckpointProblem(file: "layer-0001.blob", tensor: "weight", check: .storedChecksum,
                                                            detail: verification.problems.first?.detail ?? "")])
        #expect(verification.problems.first?.detail.hasPrefix("compressed checksum mismatch (expected \(weight.storedXXH64), got ") == true)
        // The structural check (sizes only) does not read blobs; list() says valid.
        #expect(CheckpointReader.verify(directory: scratch.store.directory(step: 20), depth: .structure).isValid)
        #expect(!CheckpointReader.verify(directory: scratch.store.directory(step: 20), depth: .storedChecksums).isValid)
        expectCheckpointError(.storedChecksum, mentioning: [
            "checkpoint \(scratch.store.directory(step: 20)): blob layer-0001.blob tensor weight: compressed checksum mismatch (expected \(weight.storedXXH64), got ",
            "the file is corrupt — restore falls back to an older checkpoint",
        ]) {
            try CheckpointReader.load(directory: scratch.store.directory(step: 20))
        }
        try Self.expectFallback(scratch, layers: layers, reason: "layer-0001.blob tensor weight: storedChecksum")
    }

    @Test func truncatedBlobIsASizeMismatch() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = try Self.twoCheckpoints(scratch)
        let path = scratch.blob(step: 20, layer: 0)
        let bytes = fileBytes(path)
        try replaceFile(path, with: Array(bytes.prefix(bytes.count - 100)))
        let verification = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(verification.problems.map(\.check) == [.blobSize])
        #expect(verification.problems.first?.file == "layer-0000.blob")
        #expect(verification.problems.first?.detail.contains("truncated") == true)
        #expect(try scratch.store.list().map(\.isValid) == [true, false], "the structural check sees the size")
        try Self.expectFallback(scratch, layers: layers, reason: "blobSize")
    }

    @Test func deletedBlobIsMissing() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = try Self.twoCheckpoints(scratch)
        try FileManager.default.removeItem(atPath: scratch.blob(step: 20, layer: 1))
        let verification = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(verification.problems == [CheckpointProblem(file: "layer-0001.blob", tensor: nil, check: .blobMissing, detail: "the blob file is missing")])
        try Self.expectFallback(scratch, layers: layers, reason: "blobMissing")
    }

    @Test func corruptManifestIsInvalid() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = try Self.twoCheckpoints(scratch)
        let path = scratch.manifest(step: 20)
        let original = fileBytes(path)

        try replaceFile(path, with: Array(original.prefix(original.count / 2)))
        #expect(CheckpointReader.verify(directory: scratch.store.directory(step: 20)).problems.map(\.check) == [.manifestInvalid])
        try Self.expectFallback(scratch, layers: layers, reason: "manifestInvalid")

        try replaceFile(path, with: Array(String(decoding: original, as: UTF8.self).replacingOccurrences(of: "\"formatVersion\" : 1", with: "\"formatVersion\" : 99").utf8))
        let future = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(future.problems.map(\.check) == [.unsupportedVersion])
        #expect(future.problems.first?.detail.contains("version 99") == true)

        try replaceFile(path, with: Array(String(decoding: original, as: UTF8.self).replacingOccurrences(of: "\"step\" : 20", with: "\"step\" : 10").utf8))
        #expect(CheckpointReader.verify(directory: scratch.store.directory(step: 20)).problems.first?.detail.contains("step 10") == true)

        try FileManager.default.removeItem(atPath: path)
        #expect(CheckpointReader.verify(directory: scratch.store.directory(step: 20)).problems.map(\.check) == [.manifestMissing])
        try Self.expectFallback(scratch, layers: layers, reason: "manifestMissing")
    }

    /// Damage that keeps the stored checksum right (a writer bug, or a manifest edited by hand)
    /// is caught by the decompression and raw checks.
    @Test func decompressionAndRawChecksumFailuresAreNamed() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        _ = try Self.twoCheckpoints(scratch)
        let manifestPath = scratch.manifest(step: 20)
        var manifest = try CheckpointReader.readManifest(directory: scratch.store.directory(step: 20))
        let weight = manifest.blobs[0].tensors[0]
        #expect(weight.codec == .zstd)
        let blobPath = scratch.blob(step: 20, layer: 0)
        var bytes = fileBytes(blobPath)
        let original = bytes

        // Garble the frame header, then record the garbled bytes' checksum.
        for i in 0..<8 { bytes[weight.offset + i] ^= 0xA5 }
        try replaceFile(blobPath, with: bytes)
        manifest.blobs[0].tensors[0].storedXXH64 = xxh64Hex(Array(bytes[weight.offset..<(weight.offset + weight.storedBytes)]))
        try replaceFile(manifestPath, with: manifest.encoded())
        let broken = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(broken.problems.map(\.check) == [.decompression])
        #expect(broken.problems.first?.tensor == "weight")

        // Bytes intact, raw checksum wrong.
        try replaceFile(blobPath, with: original)
        manifest.blobs[0].tensors[0].storedXXH64 = weight.storedXXH64
        manifest.blobs[0].tensors[1].rawXXH64 = "0123456789abcdef"
        try replaceFile(manifestPath, with: manifest.encoded())
        let wrong = CheckpointReader.verify(directory: scratch.store.directory(step: 20))
        #expect(wrong.problems.map(\.check) == [.rawChecksum])
        #expect(wrong.problems.first?.tensor == "bias")
        #expect(wrong.problems.first?.detail.contains("expected 0123456789abcdef") == true)
    }

    @Test func latestPointingAtAMissingDirectory() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = try Self.twoCheckpoints(scratch)
        try replaceFile(scratch.file("latest"), with: Array("step-00000030\n".utf8))
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen?.manifest?.step == 20)
        #expect(selection.skipped.map(\.name) == ["step-00000030"])
        #expect(selection.skipped.first?.reason.contains("does not exist") == true)

        try replaceFile(scratch.file("latest"), with: Array("../../etc/passwd".utf8))
        let garbage = try scratch.store.loadNewestValid()
        #expect(garbage.chosen?.manifest.step == 20)
        #expect(garbage.chosen?.layers == layers)
        #expect(garbage.skipped.map(\.name) == ["latest"])

        try FileManager.default.removeItem(atPath: scratch.file("latest"))
        let none = try scratch.store.newestValid()
        #expect(none.chosen?.manifest?.step == 20 && none.skipped.isEmpty)
    }

    @Test func noValidCheckpointAtAll() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        #expect(try scratch.store.newestValid().chosen == nil, "an empty (missing) root has none")
        _ = try Self.twoCheckpoints(scratch)
        for step in [10, 20] { try FileManager.default.removeItem(atPath: scratch.blob(step: step, layer: 0)) }
        let selection = try scratch.store.newestValid()
        #expect(selection.chosen == nil)
        #expect(selection.skipped.map(\.name) == ["step-00000020", "step-00000010"])
    }

    /// Random damage anywhere in a blob is always caught; random edits of the manifest never
    /// crash the reader (they give a problem, or a manifest that still verifies).
    @Test func randomDamageIsDetectedAndNeverCrashes() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: TestSeed.make("randomDamageIsDetectedAndNeverCrashes"))
        let layers = [sampleLayer(0, fanIn: 40, fanOut: 20, extras: [NamedTensor(name: "r", shape: [20], values: gaussianFloats(20, sigma: 1, rng: &rng))], rng: &rng)]
        try commitModel(scratch.store, step: 1, layers: layers)
        let directory = scratch.store.directory(step: 1)
        let blobPath = scratch.blob(step: 1, layer: 0)
        let manifestPath = scratch.manifest(step: 1)
        let blob = fileBytes(blobPath)
        let manifest = fileBytes(manifestPath)

        for _ in 0..<200 {
            var damaged = blob
            let position = Int(rng.next() % UInt64(damaged.count))
            damaged[position] ^= UInt8(rng.next() % 255 + 1)
            try replaceFile(blobPath, with: damaged)
            let verification = CheckpointReader.verify(directory: directory)
            #expect(verification.problems.map(\.check) == [.storedChecksum], "byte \(position)")
        }
        try replaceFile(blobPath, with: blob)

        let text = String(decoding: manifest, as: UTF8.self)
        let replacements = ["-1", "0", "4611686018427387904", "1e308", "\"x\"", "null", "[]", "{}", "99999999999999999999"]
        for _ in 0..<300 {
            var mutated = Array(text.utf8)
            switch rng.next() % 3 {
            case 0:
                // Replace a number with something else.
                let digits = mutated.indices.dropFirst().filter { mutated[$0] >= 48 && mutated[$0] <= 57 && (mutated[$0 - 1] == 32 || mutated[$0 - 1] == 91) }
                let start = digits[Int(rng.next() % UInt64(digits.count))]
                var end = start
                while end < mutated.count, mutated[end] >= 48 && mutated[end] <= 57 { end += 1 }
                mutated.replaceSubrange(start..<end, with: Array(replacements[Int(rng.next() % UInt64(replacements.count))].utf8))
            case 1:
                mutated[Int(rng.next() % UInt64(mutated.count))] = UInt8(rng.next() % 256)
            default:
                mutated.removeSubrange(Int(rng.next() % UInt64(mutated.count))...)
            }
            try replaceFile(manifestPath, with: mutated)
            let verification = CheckpointReader.verify(directory: directory)
            if verification.isValid {
                // An edit that keeps the manifest consistent (a date, a name, an optimizer
                // step): the values must still load bit-exactly.
                let loaded = try CheckpointReader.load(directory: directory).layers
                let bits = { (layers: [LayerCheckpoint]) in layers.flatMap { ($0.state.tensors + $0.extras).map { $0.values.map(\.bitPattern) } } }
                #expect(bits(loaded) == bits(layers), "values changed after a manifest edit")
            } else {
                #expect(!verification.problems.isEmpty)
                #expect(throws: CheckpointError.self) { try CheckpointReader.load(directory: directory) }
            }
        }
    }
}

func xxh64Hex(_ bytes: [UInt8]) -> String {
    let digits = String(bytes.withUnsafeBytes { XXH64.hash(bytes: $0) }, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}
