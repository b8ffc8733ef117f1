import ElasticCore
import ElasticStorage
import Foundation
import Testing

/// Every kind of damage is refused with the right code and a message naming the file;
/// nothing traps.
@Suite struct DatasetCorruptionTests {
    /// A fresh 3-shard data set (50 samples × 3 features, 4 classes) in a temporary directory.
    private func makeDataSet(seed: UInt64 = 77) throws -> (TemporaryDirectory, LabelledSamples) {
        let directory = try TemporaryDirectory()
        let data = sampleData(count: 50, features: 3, classes: 4, seed: seed)
        try Dataset.write(data, to: directory.path, shards: 3, name: "toy", origin: "test")
        return (directory, data)
    }

    private func mutate(_ path: String, _ change: (inout [UInt8]) -> Void) throws {
        var bytes = readBytes(path)
        change(&bytes)
        try writeBytes(bytes, to: path)
    }

    /// Stores `value` little-endian at `offset` and fixes the header checksum, so that only the
    /// field's own check can catch it.
    private func setHeaderField<T: FixedWidthInteger>(_ path: String, offset: Int, _ value: T) throws {
        try mutate(path) { bytes in
            withUnsafeBytes(of: value.littleEndian) { for (k, byte) in $0.enumerated() { bytes[offset + k] = byte } }
            let crc = CRC32C.checksum(Array(bytes[0..<60]))
            withUnsafeBytes(of: crc.littleEndian) { for (k, byte) in $0.enumerated() { bytes[60 + k] = byte } }
        }
    }

    @Test func flippedPayloadByte() throws {
        let (directory, data) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00001.eds")
        try mutate(shard) { $0[64 + 20] ^= 0x01 }
        expectDatasetError(.payloadChecksumMismatch, mentioning: shard) { try Dataset.open(directory.path) }

        // Lazily: open succeeds, the untouched shards work, the damaged one is refused on use.
        let lazy = try Dataset.open(directory.path, verification: .onFirstUse)
        #expect(try lazy.gather(indices: [0, 49]).labels == [data.labels[0], data.labels[49]])
        expectDatasetError(.payloadChecksumMismatch, mentioning: shard) { try lazy.gather(indices: [20]) }
        #expect(lazy.loadedShards == [0, 2])
    }

    @Test func flippedLabelByteInTheLastShard() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00002.eds")
        try mutate(shard) { $0[$0.count - 1] ^= 0x40 }
        expectDatasetError(.payloadChecksumMismatch, mentioning: shard) { try Dataset.open(directory.path) }
    }

    @Test func flippedHeaderByte() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00000.eds")
        try mutate(shard) { $0[26] ^= 0x10 }  // inside the sample count
        expectDatasetError(.headerChecksumMismatch, mentioning: shard) { try Dataset.open(directory.path) }
        // Headers are always checked at open, also in lazy mode.
        expectDatasetError(.headerChecksumMismatch, mentioning: shard) { try Dataset.open(directory.path, verification: .onFirstUse) }
    }

    @Test func truncatedShard() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00001.eds")
        try mutate(shard) { $0.removeLast(9) }
        expectDatasetError(.truncated, mentioning: shard) { try Dataset.open(directory.path) }
        try mutate(shard) { $0.removeSubrange(30...) }
        expectDatasetError(.truncated, mentioning: shard) { try Dataset.open(directory.path) }
        try mutate(shard) { $0.removeAll() }
        expectDatasetError(.truncated, mentioning: shard) { try Dataset.open(directory.path) }
    }

    @Test func appendedBytes() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00002.eds")
        try mutate(shard) { $0.append(contentsOf: [0, 0, 0, 0]) }
        expectDatasetError(.trailingBytes, mentioning: shard) { try Dataset.open(directory.path) }
    }

    @Test func missingShard() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00001.eds")
        try FileManager.default.removeItem(atPath: shard)
        expectDatasetError(.shardMissing, mentioning: shard) { try Dataset.open(directory.path) }
        expectDatasetError(.shardMissing, mentioning: shard) { try Dataset.open(directory.path, verification: .onFirstUse) }
    }

    @Test func wrongMagic() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00000.eds")
        try mutate(shard) { $0[1] = UInt8(ascii: "X") }
        expectDatasetError(.badMagic, mentioning: shard) { try Dataset.open(directory.path) }
    }

    @Test func wrongVersion() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00002.eds")
        try setHeaderField(shard, offset: 8, UInt16(2))
        expectDatasetError(.unsupportedVersion, mentioning: shard) { try Dataset.open(directory.path) }
    }

    @Test func implausibleHeaders() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00000.eds")
        let original = readBytes(shard)
        try setHeaderField(shard, offset: 24, UInt64(1) << 40)
        expectDatasetError(.implausibleHeader, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        try setHeaderField(shard, offset: 32, UInt32.max)
        expectDatasetError(.implausibleHeader, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        try setHeaderField(shard, offset: 40, UInt32(0))
        expectDatasetError(.implausibleHeader, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        // A plausible count that the file is too short for: refused before any allocation.
        try setHeaderField(shard, offset: 24, UInt64(1) << 28)
        expectDatasetError(.invalidHeader, mentioning: shard) { try Dataset.open(directory.path) }
        try setHeaderField(shard, offset: 48, UInt64(1 << 28) * 16)
        expectDatasetError(.truncated, mentioning: shard) { try Dataset.open(directory.path) }
        // Beyond the shard size limit (16 GiB by default) it is refused as too large.
        try setHeaderField(shard, offset: 24, UInt64(1) << 30)
        try setHeaderField(shard, offset: 48, UInt64(1 << 30) * 16)
        expectDatasetError(.tooLarge, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        try setHeaderField(shard, offset: 36, UInt16(2))
        expectDatasetError(.unsupportedLayout, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        try setHeaderField(shard, offset: 38, UInt16(7))
        expectDatasetError(.unsupportedLayout, mentioning: shard) { try Dataset.open(directory.path) }
        try writeBytes(original, to: shard)
        // The size limit applies before reading.
        expectDatasetError(.tooLarge, mentioning: shard) { try Dataset.open(directory.path, limits: DatasetLimits(maximumShardBytes: 100)) }
    }

    @Test func manifestAndShardsDisagree() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        // Two shards swapped: each header names another range than the manifest.
        let a = directory.file("shard-00000.eds")
        let b = directory.file("shard-00001.eds")
        let bytesA = readBytes(a)
        try writeBytes(readBytes(b), to: a)
        try writeBytes(bytesA, to: b)
        expectDatasetError(.manifestMismatch, mentioning: a) { try Dataset.open(directory.path) }

        // A shard of the same shape from another data set: valid on its own, but not this one's.
        let (other, _) = try makeDataSet(seed: 78)
        defer { other.remove() }
        try writeBytes(bytesA, to: a)
        try writeBytes(readBytes(other.file("shard-00001.eds")), to: b)
        expectDatasetError(.manifestMismatch, mentioning: b) { try Dataset.open(directory.path) }
        expectDatasetError(.manifestMismatch, mentioning: "payload CRC32C") { try Dataset.open(directory.path) }
    }

    @Test func damagedManifests() throws {
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let path = directory.file("manifest.json")
        let original = readBytes(path)
        let json = String(decoding: original, as: UTF8.self)

        try writeBytes(Array("{\"format\": ".utf8), to: path)
        expectDatasetError(.manifestInvalid, mentioning: path) { try Dataset.open(directory.path) }

        try writeBytes(Array(json.replacingOccurrences(of: "\"samples\" : 50", with: "\"samples\" : 51").utf8), to: path)
        expectDatasetError(.manifestInvalid, mentioning: path) { try Dataset.open(directory.path) }

        try writeBytes(Array(json.replacingOccurrences(of: "\"shard-00001.eds\"", with: "\"../shard-00001.eds\"").utf8), to: path)
        expectDatasetError(.manifestInvalid, mentioning: "plain names") { try Dataset.open(directory.path) }

        try writeBytes(Array(json.replacingOccurrences(of: "\"fingerprint\" : \"", with: "\"fingerprint\" : \"0").utf8), to: path)
        expectDatasetError(.manifestInvalid, mentioning: "fingerprint") { try Dataset.open(directory.path) }

        try writeBytes(Array(json.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 9").utf8), to: path)
        expectDatasetError(.unsupportedVersion, mentioning: path) { try Dataset.open(directory.path) }

        try writeBytes(Array(json.replacingOccurrences(of: "\"features\" :", with: "\"featurez\" :").utf8), to: path)
        expectDatasetError(.manifestInvalid, mentioning: "'features' is missing") { try Dataset.open(directory.path) }

        // Class counts that add up but do not match the labels.
        var manifest = try DatasetManifest.decode(original, path: path)
        var counts = try #require(manifest.classCounts)
        counts[0] += 1
        counts[1] -= 1
        manifest.classCounts = counts
        try writeBytes(manifest.encoded(), to: path)
        expectDatasetError(.manifestMismatch, mentioning: "samples of class 0") { try Dataset.open(directory.path) }
        try writeBytes(original, to: path)
        #expect(try Dataset.open(directory.path).sampleCount == 50)

        // An oversized manifest is refused before it is read (a sparse file: no disk used).
        try writeBytes([], to: path)
        #expect(truncate(path, off_t(DatasetLimits.maximumManifestBytes + 1)) == 0)
        expectDatasetError(.tooLarge, mentioning: path) { try Dataset.open(directory.path) }

        try FileManager.default.removeItem(atPath: path)
        expectDatasetError(.manifestMissing, mentioning: directory.path) { try Dataset.open(directory.path) }
        expectDatasetError(.manifestMissing, mentioning: "does not exist") { try Dataset.open(directory.file("nowhere")) }
    }

    /// Randomized damage: every single-bit flip, every truncation, any garbage header is refused
    /// with a DatasetError (never a crash, never a silent success).
    @Test func randomDamageIsAlwaysRefused() throws {
        let seed: UInt64 = 0xBAD_DA7A
        print("DatasetCorruptionTests.randomDamageIsAlwaysRefused seed \(seed)")
        let (directory, _) = try makeDataSet()
        defer { directory.remove() }
        let shard = directory.file("shard-00001.eds")
        let original = readBytes(shard)
        var rng = SplitMix64(seed: seed)
        for trial in 0..<150 {
            var bytes = original
            switch trial % 3 {
            case 0:
                let bit = Int(rng.next() % UInt64(bytes.count * 8))
                bytes[bit / 8] ^= UInt8(1 << (bit % 8))
            case 1:
                bytes.removeSubrange(Int(rng.next() % UInt64(bytes.count))...)
            default:
                for k in 0..<64 { bytes[k] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            try writeBytes(bytes, to: shard)
            do {
                _ = try Dataset.open(directory.path)
                Issue.record("trial \(trial) (seed \(seed)): damaged shard was accepted")
            } catch {
                #expect(error.message.contains(shard), "trial \(trial): \(error.message)")
            }
        }
    }
}
