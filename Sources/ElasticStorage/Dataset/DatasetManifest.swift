import ElasticCore
import Foundation

/// `manifest.json` of a data set directory (docs/data-format.md): what the data set is, how it
/// was made, and every shard with its range of global sample indices, size and checksum.
/// Written last, so a directory with a manifest is complete.
public struct DatasetManifest: Codable, Sendable, Equatable {
    public static let fileName = "manifest.json"
    public static let formatName = "elastic-dataset"
    public static let formatVersion = 1

    public struct Shard: Codable, Sendable, Equatable {
        /// File name inside the data set directory (no slashes).
        public var file: String
        /// Global index of its first sample.
        public var firstSample: Int
        public var samples: Int
        /// File length, header included.
        public var bytes: Int
        /// CRC32C of the payload, eight hex digits.
        public var payloadCRC32C: String

        public init(file: String, firstSample: Int, samples: Int, bytes: Int, payloadCRC32C: String) {
            self.file = file
            self.firstSample = firstSample
            self.samples = samples
            self.bytes = bytes
            self.payloadCRC32C = payloadCRC32C
        }

        public var sampleRange: Range<Int> { firstSample..<firstSample + samples }
    }

    /// Always "elastic-dataset".
    public var format: String
    public var version: Int
    public var name: String
    /// How the data set was made, e.g. "w1 seed 42 samples 65536" or "csv iris.csv".
    public var origin: String
    public var samples: Int
    public var features: Int
    /// Always "float32" in version 1.
    public var featureType: String
    public var labels: LabelLayout
    /// Samples per class, when the writer counted them.
    public var classCounts: [Int]?
    /// Always "crc32c" in version 1.
    public var checksum: String
    /// A 64-bit digest of the shape and every shard's range and payload checksum (16 hex
    /// digits): equal fingerprints mean the same samples in the same shards.
    public var fingerprint: String
    public var shards: [Shard]

    public init(name: String, origin: String, samples: Int, features: Int, labels: LabelLayout, classCounts: [Int]?, shards: [Shard]) {
        format = Self.formatName
        version = Self.formatVersion
        self.name = name
        self.origin = origin
        self.samples = samples
        self.features = features
        featureType = "float32"
        self.labels = labels
        self.classCounts = classCounts
        checksum = "crc32c"
        self.shards = shards
        fingerprint = ""
        fingerprint = computedFingerprint()
    }

    public var classes: Int { labels.classes }
    public var shape: DatasetShape { DatasetShape(samples: samples, features: features, classes: classes) }

    /// The fingerprint the fields imply: SplitMix64's finalizer chained over (format version,
    /// samples, features, feature type 1, label layout code, classes, shard count, then per
    /// shard first sample, samples, payload CRC32C): h ← mix((h xor v) + 0x9E3779B97F4A7C15).
    public func computedFingerprint() -> String {
        var h: UInt64 = 0
        func add(_ v: UInt64) { h = SplitMix64.mix((h ^ v) &+ 0x9E37_79B9_7F4A_7C15) }
        add(UInt64(Self.formatVersion))
        add(UInt64(truncatingIfNeeded: samples))
        add(UInt64(truncatingIfNeeded: features))
        add(UInt64(ShardHeader.float32TypeCode))
        add(UInt64(labels.code))
        add(UInt64(truncatingIfNeeded: classes))
        add(UInt64(shards.count))
        for shard in shards {
            add(UInt64(truncatingIfNeeded: shard.firstSample))
            add(UInt64(truncatingIfNeeded: shard.samples))
            add(UInt64(CRC32C.parseHex(shard.payloadCRC32C) ?? 0))
        }
        let digits = String(h, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// The shard holding global sample `index` (binary search), or nil outside [0, samples).
    public func shardIndex(containing index: Int) -> Int? {
        guard index >= 0, index < samples else { return nil }
        var low = 0
        var high = shards.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if shards[middle].firstSample <= index { low = middle } else { high = middle - 1 }
        }
        return low
    }

    // MARK: - Reading and writing

    /// The JSON bytes: pretty-printed with sorted keys, so equal manifests are equal files.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings and integers cannot fail.
        return Array((try? encoder.encode(self)) ?? Data()) + [0x0A]
    }

    /// Decodes and checks a manifest read from `path`.
    public static func decode(_ bytes: [UInt8], path: String) throws(DatasetError) -> DatasetManifest {
        let manifest: DatasetManifest
        do {
            manifest = try JSONDecoder().decode(DatasetManifest.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw DatasetError(.manifestInvalid, "\(path) is not a valid data set manifest: \(describe(error)); write the data set again", path: path)
        } catch {
            throw DatasetError(.manifestInvalid, "\(path) is not a valid data set manifest: \(error)", path: path)
        }
        try manifest.validate(path: path)
        return manifest
    }

    /// Checks the manifest on its own: format, counts within limits, shards that are plain file
    /// names covering [0, samples) contiguously and in order, checksums that parse, class
    /// counts that add up, and the fingerprint.
    public func validate(path: String) throws(DatasetError) {
        func invalid(_ what: String) -> DatasetError {
            DatasetError(.manifestInvalid, "\(path): \(what)", path: path)
        }
        guard format == Self.formatName else { throw invalid("format is '\(format)', not '\(Self.formatName)': this is not a data set manifest") }
        guard version == Self.formatVersion else {
            throw DatasetError(.unsupportedVersion, "\(path) has data set format version \(version); this build reads version \(Self.formatVersion): use a matching elastic, or write the data set again", path: path)
        }
        guard featureType == "float32" else { throw DatasetError(.unsupportedLayout, "\(path): feature type '\(featureType)'; this build reads only float32", path: path) }
        guard checksum == "crc32c" else { throw DatasetError(.unsupportedLayout, "\(path): checksum '\(checksum)'; this build knows only crc32c", path: path) }
        guard samples >= 1, samples <= Int(Int32.max) else { throw invalid("\(samples) samples; a data set holds 1 to 2^31−1") }
        guard features >= 1, features <= DatasetLimits.maximumFeatureCount else { throw invalid("\(features) features; a data set has 1 to \(DatasetLimits.maximumFeatureCount)") }
        guard classes >= 1, classes <= DatasetLimits.maximumClassCount else { throw invalid("\(classes) classes; a data set has 1 to \(DatasetLimits.maximumClassCount)") }
        guard !shards.isEmpty, shards.count <= samples else { throw invalid("\(shards.count) shards for \(samples) samples; a data set has 1 to one shard per sample") }
        var next = 0
        var names = Set<String>()
        for (k, shard) in shards.enumerated() {
            guard Self.isPlainFileName(shard.file) else {
                throw invalid("shard \(k) has the file name '\(shard.file)'; shard files must be plain names inside the data set directory")
            }
            guard names.insert(shard.file).inserted else { throw invalid("shard file \(shard.file) is listed twice") }
            guard shard.firstSample == next else {
                throw invalid("shard \(shard.file) starts at sample \(shard.firstSample), but the shards before it end at \(next): shards must cover the samples contiguously, in order")
            }
            guard shard.samples >= 1, shard.samples <= samples - next else {
                throw invalid("shard \(shard.file) holds \(shard.samples) samples from \(next), beyond the \(samples) of the data set")
            }
            let expectedBytes = ShardHeader.size + shard.samples * (features * 4 + labels.bytesPerSample)
            guard shard.bytes == expectedBytes else {
                throw invalid("shard \(shard.file) is listed with \(shard.bytes) bytes; \(shard.samples) samples × \(features) features take \(expectedBytes)")
            }
            guard CRC32C.parseHex(shard.payloadCRC32C) != nil else {
                throw invalid("shard \(shard.file) has the checksum '\(shard.payloadCRC32C)', not eight hex digits")
            }
            next += shard.samples
        }
        guard next == samples else { throw invalid("the shards hold \(next) samples, but the manifest says \(samples)") }
        if let classCounts {
            guard classCounts.count == classes, classCounts.allSatisfy({ $0 >= 0 }), classCounts.reduce(0, +) == samples else {
                throw invalid("classCounts has \(classCounts.count) entries adding up to \(classCounts.reduce(0, &+)); expected \(classes) entries adding up to \(samples)")
            }
        }
        let expected = computedFingerprint()
        guard fingerprint == expected else {
            throw invalid("the fingerprint is \(fingerprint), but the fields give \(expected): the manifest was edited or corrupted; write the data set again")
        }
    }

    static func isPlainFileName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.contains("\0") && name.utf8.count <= 255
    }

    private static func describe(_ error: DecodingError) -> String {
        func at(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "" : " at " + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return "the field '\(key.stringValue)' is missing\(at(context.codingPath))"
        case .typeMismatch(_, let context): return "wrong type\(at(context.codingPath)): \(context.debugDescription)"
        case .valueNotFound(_, let context): return "a value is missing\(at(context.codingPath))"
        case .dataCorrupted(let context): return context.codingPath.isEmpty ? "not valid JSON" : "bad value\(at(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
