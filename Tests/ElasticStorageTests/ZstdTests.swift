import ElasticCore
import ElasticStorage
import Testing

@Suite struct ZstdTests {
    @Test func roundTripIsExactAndCompresses() throws {
        // Seeded, so the bytes are the same on every run: a repetitive text and pseudo-random floats.
        var rng = SplitMix64(seed: 0x5EED)
        func next() -> UInt64 { rng.next() }
        let text = Array(String(repeating: "elastic checkpoints are compressed with zstd. ", count: 2000).utf8)
        let packed = try Zstd.compress(text)
        #expect(packed.count * 20 < text.count, "repetitive text must compress well")
        #expect(try Zstd.decompress(packed, maximumSize: text.count) == text)

        let floats = (0..<50_000).flatMap { _ -> [UInt8] in
            let value = Float(Double(next() >> 11) * 0x1p-53 - 0.5)
            return withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
        }
        let packedFloats = try Zstd.compress(floats, level: 3)
        #expect(try Zstd.decompress(packedFloats, maximumSize: floats.count) == floats)
        #expect(!Zstd.libraryVersion.isEmpty)
    }

    @Test func refusesCorruptAndOversizedInput() throws {
        let data = Array(repeating: UInt8(7), count: 10_000)
        var packed = try Zstd.compress(data)
        #expect(throws: Zstd.Failure.self) { try Zstd.decompress(packed, maximumSize: 100) }
        #expect(throws: Zstd.Failure.self) { try Zstd.decompress([1, 2, 3, 4, 5], maximumSize: 100) }
        packed[packed.count / 2] ^= 0xFF
        packed.removeLast(3)
        #expect(throws: Zstd.Failure.self) { try Zstd.decompress(packed, maximumSize: data.count) }
    }
}
