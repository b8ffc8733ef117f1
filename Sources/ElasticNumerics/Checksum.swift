/// 64-bit FNV-1a over bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
/// Cheap but byte-serial (~1 GB/s); `XXH64` is the fast one for large tensors.
public struct FNV1a64: Sendable {
    /// The hash of everything fed so far.
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    /// Feeds raw bytes.
    public mutating func combine(bytes: UnsafeRawBufferPointer) {
        var h = value
        for byte in bytes {
            h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        value = h
    }

    /// The value's 8 bytes, little-endian.
    public mutating func combine(_ word: UInt64) {
        withUnsafeBytes(of: word.littleEndian) { combine(bytes: $0) }
    }

    public mutating func combine(_ byte: UInt8) {
        withUnsafeBytes(of: byte) { combine(bytes: $0) }
    }

    /// The string's UTF-8 bytes.
    public mutating func combine(_ text: String) {
        var text = text
        text.withUTF8 { combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// The floats' little-endian bytes.
    public mutating func combine(_ floats: [Float]) {
        #if _endian(little)
        floats.withUnsafeBytes { combine(bytes: $0) }
        #else
        for f in floats { withUnsafeBytes(of: f.bitPattern.littleEndian) { combine(bytes: $0) } }
        #endif
    }
}

/// XXH64 (xxHash, 64-bit, Yann Collet's specification) of a byte buffer, one shot. Fast
/// (several GB/s) and strong enough to fingerprint tensors; not a cryptographic hash.
public enum XXH64 {
    static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always) static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* p1 &+ p4
    }

    /// XXH64 of `bytes` with `seed`.
    public static func hash(bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let length = bytes.count
        var offset = 0
        @inline(__always) func word64(_ at: Int) -> UInt64 {
            UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))
        }
        var h: UInt64
        if length >= 32 {
            var v1 = seed &+ p1 &+ p2
            var v2 = seed &+ p2
            var v3 = seed
            var v4 = seed &- p1
            while offset + 32 <= length {
                v1 = round(v1, word64(offset))
                v2 = round(v2, word64(offset + 8))
                v3 = round(v3, word64(offset + 16))
                v4 = round(v4, word64(offset + 24))
                offset += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1)
            h = merge(h, v2)
            h = merge(h, v3)
            h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        h = h &+ UInt64(length)
        while offset + 8 <= length {
            h ^= round(0, word64(offset))
            h = rotl(h, 27) &* p1 &+ p4
            offset += 8
        }
        if offset + 4 <= length {
            let word = UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            h ^= word &* p1
            h = rotl(h, 23) &* p2 &+ p3
            offset += 4
        }
        while offset < length {
            h ^= UInt64(bytes[offset]) &* p5
            h = rotl(h, 11) &* p1
            offset += 1
        }
        h ^= h >> 33
        h = h &* p2
        h ^= h >> 29
        h = h &* p3
        h ^= h >> 32
        return h
    }

    /// XXH64 of the floats' little-endian bytes.
    public static func hash(_ floats: [Float], seed: UInt64 = 0) -> UInt64 {
        #if _endian(little)
        return floats.withUnsafeBytes { hash(bytes: $0, seed: seed) }
        #else
        let bytes = floats.map { $0.bitPattern.littleEndian }
        return bytes.withUnsafeBytes { hash(bytes: $0, seed: seed) }
        #endif
    }
}
