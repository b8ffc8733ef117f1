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

    fileprivate static func check(_ result: Int, _ operation: String) throws(Failure) {
        if ZSTD_isError(result) != 0 {
            throw Failure(message: "zstd \(operation) failed: \(String(cString: ZSTD_getErrorName(result)))")
        }
    }
}

extension Zstd {
    /// The compression levels this libzstd accepts (negative levels are the "fast" ones).
    public static var levels: ClosedRange<Int32> { ZSTD_minCLevel()...ZSTD_maxCLevel() }

    /// The most a zstd frame can expand: a block holds at most 128 KiB and takes at least 4
    /// bytes (an RLE block: 3 of header, 1 of content). A frame that claims more per stored byte
    /// is damaged or a decompression bomb, and is refused before anything is allocated.
    public static let maximumExpansion = 32_768

    /// The largest frame `count` bytes can compress to.
    public static func compressBound(_ count: Int) -> Int { ZSTD_compressBound(count) }

    /// The content size a zstd frame records in its header, or nil when `input` does not start
    /// with a frame that records one.
    public static func frameContentSize(_ input: UnsafeRawBufferPointer) -> UInt64? {
        let size = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        if size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN { return nil }
        return size
    }

    /// A reusable compression context (one per thread): level and worker threads are set once,
    /// and every frame records its content size and a frame checksum is not added (the
    /// checkpoint format checksums both forms itself). Not thread-safe.
    public final class Compressor {
        private let context: OpaquePointer
        public let level: Int32
        /// libzstd worker threads (ZSTD_c_nbWorkers); 0 compresses on the calling thread.
        public let workers: Int32

        /// `workers` > 0 needs a libzstd built with multithreading; without it the compressor
        /// silently uses the calling thread (the output is a valid frame either way).
        public init(level: Int32, workers: Int32 = 0) throws(Failure) {
            guard let context = ZSTD_createCCtx() else { throw Failure(message: "zstd: cannot allocate a compression context") }
            self.context = context
            self.level = level
            try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level), "set the level \(level)")
            try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), "set the content size flag")
            var applied: Int32 = 0
            if workers > 0, ZSTD_isError(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, workers)) == 0 {
                applied = workers
            }
            self.workers = applied
        }

        deinit { ZSTD_freeCCtx(context) }

        /// Compresses `input` into one frame that records its content size.
        public func compress(_ input: UnsafeRawBufferPointer) throws(Failure) -> [UInt8] {
            var output = [UInt8](repeating: 0, count: Zstd.compressBound(input.count))
            let written = try output.withUnsafeMutableBytes { destination in
                Result { () throws(Failure) in try compress(input, into: destination) }
            }.get()
            output.removeSubrange(written...)
            return output
        }

        /// Compresses `input` into `output` (at least `Zstd.compressBound(input.count)` bytes
        /// guarantees success); returns the frame's length.
        public func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(Failure) -> Int {
            let written = ZSTD_compress2(context, output.baseAddress, output.count, input.baseAddress, input.count)
            try Zstd.check(written, "compress")
            return written
        }
    }

    /// A reusable decompression context. Not thread-safe.
    public final class Decompressor {
        private let context: OpaquePointer

        public init() throws(Failure) {
            guard let context = ZSTD_createDCtx() else { throw Failure(message: "zstd: cannot allocate a decompression context") }
            self.context = context
        }

        deinit { ZSTD_freeDCtx(context) }

        /// Decompresses the single frame in `input` into exactly `output.count` bytes; throws
        /// when the frame is damaged, records another size, or decodes to another length.
        public func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(Failure) {
            guard let recorded = Zstd.frameContentSize(input) else {
                throw Failure(message: "not a zstd frame that records its size")
            }
            guard recorded == UInt64(output.count) else {
                throw Failure(message: "the zstd frame holds \(recorded) bytes, not the \(output.count) expected")
            }
            let written = ZSTD_decompressDCtx(context, output.baseAddress, output.count, input.baseAddress, input.count)
            try Zstd.check(written, "decompress")
            guard written == output.count else {
                throw Failure(message: "the zstd frame decoded to \(written) bytes, not the \(output.count) it records")
            }
        }
    }
}
