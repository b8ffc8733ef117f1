/// How labels are stored after the features. Only class indices exist in format version 1;
/// the header keeps a layout code, a class count and a per-sample width so that other
/// layouts (regression targets, multi-label) can be added without a new header.
public enum LabelLayout: Sendable, Equatable, Codable, CustomStringConvertible {
    /// One little-endian int32 per sample, in [0, classes).
    case classIndex(classes: Int)

    /// The header's layout code.
    public var code: UInt16 {
        switch self {
        case .classIndex: 1
        }
    }

    /// Label values per sample.
    public var width: Int {
        switch self {
        case .classIndex: 1
        }
    }

    public var classes: Int {
        switch self {
        case .classIndex(let classes): classes
        }
    }

    /// Label bytes per sample.
    public var bytesPerSample: Int { width * 4 }

    public var description: String {
        switch self {
        case .classIndex(let classes): "int32 class labels, \(classes) classes"
        }
    }

    private enum CodingKeys: String, CodingKey { case layout, classes }

    /// The JSON name of the layout.
    public static let classIndexName = "int32-class"

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let layout = try container.decode(String.self, forKey: .layout)
        guard layout == Self.classIndexName else {
            throw DecodingError.dataCorruptedError(forKey: .layout, in: container, debugDescription: "unknown label layout '\(layout)' (this build reads '\(Self.classIndexName)')")
        }
        self = .classIndex(classes: try container.decode(Int.self, forKey: .classes))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .classIndex(let classes):
            try container.encode(Self.classIndexName, forKey: .layout)
            try container.encode(classes, forKey: .classes)
        }
    }
}

/// The fixed 64-byte header at the start of every shard file (docs/data-format.md). All fields
/// little-endian.
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 8 | magic `89 45 44 53 0D 0A 1A 0A` ("\x89EDS\r\n\x1a\n") |
/// | 8 | 2 | format version (1) |
/// | 10 | 2 | header length (64) |
/// | 12 | 4 | flags (0) |
/// | 16 | 8 | global index of the first sample |
/// | 24 | 8 | sample count |
/// | 32 | 4 | feature count |
/// | 36 | 2 | feature type (1 = float32) |
/// | 38 | 2 | label layout (1 = int32 class index) |
/// | 40 | 4 | classes |
/// | 44 | 4 | label width (values per sample; 1) |
/// | 48 | 8 | payload length in bytes |
/// | 56 | 4 | CRC32C of the payload |
/// | 60 | 4 | CRC32C of header bytes 0..<60 |
public struct ShardHeader: Sendable, Equatable {
    public static let magic: [UInt8] = [0x89, 0x45, 0x44, 0x53, 0x0D, 0x0A, 0x1A, 0x0A]
    public static let formatVersion: UInt16 = 1
    public static let size = 64
    /// Feature type code of little-endian IEEE-754 float32.
    public static let float32TypeCode: UInt16 = 1

    public var firstSample: Int
    public var sampleCount: Int
    public var featureCount: Int
    public var labels: LabelLayout
    public var payloadCRC32C: UInt32

    public init(firstSample: Int, sampleCount: Int, featureCount: Int, labels: LabelLayout, payloadCRC32C: UInt32) {
        self.firstSample = firstSample
        self.sampleCount = sampleCount
        self.featureCount = featureCount
        self.labels = labels
        self.payloadCRC32C = payloadCRC32C
    }

    public var featureBytes: Int { sampleCount * featureCount * 4 }
    public var labelBytes: Int { sampleCount * labels.bytesPerSample }
    public var payloadLength: Int { featureBytes + labelBytes }
    /// The whole file: header and payload.
    public var fileLength: Int { Self.size + payloadLength }
    public var sampleRange: Range<Int> { firstSample..<firstSample + sampleCount }

    /// The 64 header bytes, header checksum included.
    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        bytes.reserveCapacity(Self.size)
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        put(Self.formatVersion)
        put(UInt16(Self.size))
        put(UInt32(0))
        put(UInt64(firstSample))
        put(UInt64(sampleCount))
        put(UInt32(featureCount))
        put(Self.float32TypeCode)
        put(labels.code)
        put(UInt32(labels.classes))
        put(UInt32(labels.width))
        put(UInt64(payloadLength))
        put(payloadCRC32C)
        put(CRC32C.checksum(bytes))
        return bytes
    }

    /// Decodes and checks a header read from `path`, whose file is `fileLength` bytes long:
    /// magic, version, header checksum, known feature type and label layout, counts within the
    /// limits, and a payload length that matches the counts and the file. Allocates nothing
    /// sized by the header.
    public static func decode(_ bytes: [UInt8], fileLength: Int, path: String, limits: DatasetLimits = .init()) throws(DatasetError) -> ShardHeader {
        guard bytes.count >= size, fileLength >= size else {
            throw DatasetError(.truncated, "\(path) is \(min(bytes.count, fileLength)) bytes long, shorter than the \(size)-byte shard header: the file is truncated; copy or regenerate it", path: path)
        }
        guard Array(bytes[0..<8]) == magic else {
            throw DatasetError(.badMagic, "\(path) is not an elastic data shard (it does not start with the shard magic \\x89EDS\\r\\n\\x1a\\n)", path: path)
        }
        func read<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            var value: T = 0
            for k in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + k]) << (8 * k) }
            return value
        }
        let version = read(8, UInt16.self)
        guard version == formatVersion else {
            throw DatasetError(.unsupportedVersion, "\(path) has shard format version \(version); this build reads version \(formatVersion): use a matching elastic, or write the data set again", path: path)
        }
        let headerLength = read(10, UInt16.self)
        guard Int(headerLength) == size else {
            throw DatasetError(.invalidHeader, "\(path) declares a \(headerLength)-byte header; version \(formatVersion) headers are \(size) bytes: the file is corrupted", path: path)
        }
        let storedHeaderCRC = read(60, UInt32.self)
        let headerCRC = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        guard storedHeaderCRC == headerCRC else {
            throw DatasetError(.headerChecksumMismatch, "\(path): the header checksum does not match (CRC32C \(CRC32C.hex(headerCRC)), stored \(CRC32C.hex(storedHeaderCRC))): the header is corrupted; copy or regenerate the file", path: path)
        }
        let flags = read(12, UInt32.self)
        guard flags == 0 else {
            throw DatasetError(.unsupportedLayout, "\(path) sets header flags 0x\(String(flags, radix: 16)) this build does not know: use a newer elastic", path: path)
        }
        let featureType = read(36, UInt16.self)
        guard featureType == float32TypeCode else {
            throw DatasetError(.unsupportedLayout, "\(path) stores features of type \(featureType); this build reads only float32 (type 1)", path: path)
        }
        let layoutCode = read(38, UInt16.self)
        let classes = read(40, UInt32.self)
        let width = read(44, UInt32.self)
        guard layoutCode == 1 else {
            throw DatasetError(.unsupportedLayout, "\(path) stores labels in layout \(layoutCode); this build reads only int32 class labels (layout 1)", path: path)
        }
        guard width == 1 else {
            throw DatasetError(.invalidHeader, "\(path) declares \(width) label values per sample; int32 class labels have 1", path: path)
        }
        guard classes >= 1, Int(classes) <= DatasetLimits.maximumClassCount else {
            throw DatasetError(.implausibleHeader, "\(path) claims \(classes) classes; a shard may have 1 to \(DatasetLimits.maximumClassCount): the file is corrupted", path: path)
        }
        let first = read(16, UInt64.self)
        let count = read(24, UInt64.self)
        let features = read(32, UInt32.self)
        guard count >= 1, count <= UInt64(Int32.max) else {
            throw DatasetError(.implausibleHeader, "\(path) claims \(count) samples; a shard holds 1 to 2^31−1: the file is corrupted", path: path)
        }
        guard first <= UInt64(Int32.max) - count else {
            throw DatasetError(.implausibleHeader, "\(path) claims samples \(first)..<\(first &+ count), beyond the 2^31−1 a data set can index: the file is corrupted", path: path)
        }
        guard features >= 1, Int(features) <= DatasetLimits.maximumFeatureCount else {
            throw DatasetError(.implausibleHeader, "\(path) claims \(features) features per sample; a shard may have 1 to \(DatasetLimits.maximumFeatureCount): the file is corrupted", path: path)
        }
        let header = ShardHeader(firstSample: Int(first), sampleCount: Int(count), featureCount: Int(features), labels: .classIndex(classes: Int(classes)), payloadCRC32C: read(56, UInt32.self))
        // count < 2^31 and features < 2^24: the products below fit in Int64.
        let declaredPayload = read(48, UInt64.self)
        guard declaredPayload == UInt64(header.payloadLength) else {
            throw DatasetError(.invalidHeader, "\(path) declares a payload of \(declaredPayload) bytes, but \(count) samples × \(features) features need \(header.payloadLength): the file is corrupted", path: path)
        }
        guard header.fileLength <= limits.maximumShardBytes else {
            throw DatasetError(.tooLarge, "\(path) holds \(header.fileLength) bytes, more than the \(limits.maximumShardBytes)-byte shard limit: write the data set with more shards, or raise the limit", path: path)
        }
        guard fileLength >= header.fileLength else {
            throw DatasetError(.truncated, "\(path) is \(fileLength) bytes long, but its header describes \(header.fileLength): the file is truncated; copy or regenerate it", path: path)
        }
        guard fileLength == header.fileLength else {
            throw DatasetError(.trailingBytes, "\(path) is \(fileLength) bytes long, \(fileLength - header.fileLength) more than its header describes: the file is corrupted or was appended to", path: path)
        }
        return header
    }
}
