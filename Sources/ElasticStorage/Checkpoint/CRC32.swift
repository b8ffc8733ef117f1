/// CRC-32 of ZIP, gzip and PNG (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and
/// final xor 0xFFFFFFFF). The npz export needs it; checkpoints themselves use XXH64.
///
/// Software slicing-by-8, like `CRC32C`.
public struct CRC32: Sendable, Equatable {
    private var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    /// The checksum of everything passed to `update` so far.
    public var value: UInt32 { ~state }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        state = SlicingCRC.update(state, bytes, table: crc32Table)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }
}

private let crc32Table = SlicingCRC.table(polynomial: 0xEDB8_8320)
