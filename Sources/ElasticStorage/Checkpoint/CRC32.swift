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
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var crc = state
        let count = bytes.count
        var offset = 0
        crc32Table.withUnsafeBufferPointer { table in
            while count - offset >= 8 {
                let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) ^ UInt64(crc)
                crc = table[7 &* 256 &+ Int(word & 0xFF)]
                    ^ table[6 &* 256 &+ Int((word &>> 8) & 0xFF)]
                    ^ table[5 &* 256 &+ Int((word &>> 16) & 0xFF)]
                    ^ table[4 &* 256 &+ Int((word &>> 24) & 0xFF)]
                    ^ table[3 &* 256 &+ Int((word &>> 32) & 0xFF)]
                    ^ table[2 &* 256 &+ Int((word &>> 40) & 0xFF)]
                    ^ table[1 &* 256 &+ Int((word &>> 48) & 0xFF)]
                    ^ table[Int(word &>> 56)]
                offset &+= 8
            }
            while offset < count {
                let byte = base.load(fromByteOffset: offset, as: UInt8.self)
                crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc &>> 8)
                offset &+= 1
            }
        }
        state = crc
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

/// Eight 256-entry tables: table k maps a byte to its CRC contribution k bytes further on.
private let crc32Table: [UInt32] = {
    var table = [UInt32](repeating: 0, count: 8 * 256)
    for byte in 0..<256 {
        var crc = UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        table[byte] = crc
    }
    for slice in 1..<8 {
        for byte in 0..<256 {
            let previous = table[(slice - 1) * 256 + byte]
            table[slice * 256 + byte] = (previous >> 8) ^ table[Int(previous & 0xFF)]
        }
    }
    return table
}()
