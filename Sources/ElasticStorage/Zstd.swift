import CZstd

/// Compression with the system libzstd (checkpoints use it; see DESIGN.md).
public enum Zstd {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// The libzstd version the binary runs with, e.g. "1.5.4".
    public static var libraryVersion: String { String(cString: ZSTD_versionString()) }

    /// Compresses `input` at `level` (1…19; negative levels trade ratio for speed).
    public static func compress(_ input: [UInt8], level: Int32 = 1) throws(Failure) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { destination in
                ZSTD_compress(destination.baseAddress, bound, source.baseAddress, source.count, level)
            }
        }
        try check(written, "compress")
        output.removeSubrange(written...)
        return output
    }

    /// Decompresses one zstd frame whose content size is recorded in its header, refusing
    /// anything larger than `maximumSize`.
    public static func decompress(_ input: [UInt8], maximumSize: Int) throws(Failure) -> [UInt8] {
        let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        if size == ZSTD_CONTENTSIZE_ERROR { throw Failure(message: "not a zstd frame") }
        if size == ZSTD_CONTENTSIZE_UNKNOWN { throw Failure(message: "the zstd frame does not record its size") }
        guard size <= UInt64(maximumSize) else {
            throw Failure(message: "the zstd frame holds \(size) bytes, more than the allowed \(maximumSize)")
        }
        var output = [UInt8](repeating: 0, count: Int(size))
        let written = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { destination in
                ZSTD_decompress(destination.baseAddress, destination.count, source.baseAddress, source.count)
            }
        }
        try check(written, "decompress")
        guard written == Int(size) else { throw Failure(message: "the zstd frame decoded to \(written) bytes, not the \(size) it records") }
        return output
    }

    private static func check(_ result: Int, _ operation: String) throws(Failure) {
        if ZSTD_isError(result) != 0 {
            throw Failure(message: "zstd \(operation) failed: \(String(cString: ZSTD_getErrorName(result)))")
        }
    }
}
