#if canImport(Glibc)
import Glibc
#endif
import ElasticNumerics

/// How `writeLayers` stores tensors. The defaults were chosen by measurement
/// (docs/checkpoint-format.md, "Choosing the defaults"; bench/checkpoint).
public struct CheckpointWriteOptions: Sendable, Equatable {
    /// When float tensors are byte-plane shuffled before zstd.
    public enum ShufflePolicy: String, Sendable, CaseIterable {
        /// Tensors of at least `autoShuffleMinimumElements` floats.
        case auto
        /// Every non-empty tensor.
        case always
        /// No tensor.
        case never
    }

    /// zstd level 1. On byte-plane shuffled float32 weights and optimizer state it compresses
    /// better than levels 3–12 (ratio 1.19 against 1.17–1.18 on trained W1 weights) and within 2%
    /// of level 19, at 1.2 GB/s encoding against 0.7 GB/s for level 3 and 7 MB/s for level 19
    /// (docs/checkpoint-format.md).
    public static let defaultLevel: Int32 = 1
    /// `.auto` shuffles float tensors of at least this many elements (16 KiB). zstd keeps one
    /// Huffman table per 128 KiB block, so the shuffle pays once a plane fills much of a block:
    /// 5% smaller at 65 536 floats, 8–10% from 131 072 up; from 4096 floats it never costs, and
    /// below it changes nothing measurable (docs/checkpoint-format.md).
    public static let autoShuffleMinimumElements = 4096

    /// zstd compression level (`Zstd.levels`; negative levels are faster and compress less).
    public var level: Int32
    public var shuffle: ShufflePolicy
    /// zstd worker threads per compression (ZSTD_c_nbWorkers); 0 compresses on the calling
    /// thread. Only tensors larger than zstd's job size (a few MiB) use more than one thread.
    public var compressionThreads: Int

    public init(level: Int32 = CheckpointWriteOptions.defaultLevel, shuffle: ShufflePolicy = .auto, compressionThreads: Int = 0) {
        self.level = level
        self.shuffle = shuffle
        self.compressionThreads = compressionThreads
    }

    func shuffles(elementCount: Int) -> Bool {
        switch shuffle {
        case .auto: elementCount >= Self.autoShuffleMinimumElements
        case .always: elementCount > 0
        case .never: false
        }
    }
}

/// Encodes tensors into their stored form: transform, zstd, both checksums. A tensor that zstd
/// does not shrink is stored raw (transform none, codec none). Keeps its scratch buffers from
/// tensor to tensor (fresh pages cost more than the shuffle itself). One per writer thread.
final class TensorEncoder {
    let options: CheckpointWriteOptions
    private let compressor: Zstd.Compressor
    private var planes: [UInt8] = []
    private var output: [UInt8] = []

    init(options: CheckpointWriteOptions) throws(CheckpointError) {
        guard Zstd.levels.contains(options.level) else {
            throw CheckpointError(.invalidArgument, "zstd level \(options.level) is outside \(Zstd.levels.lowerBound)…\(Zstd.levels.upperBound); choose a level in that range (\(CheckpointWriteOptions.defaultLevel) is the default)")
        }
        guard options.compressionThreads >= 0, options.compressionThreads <= 256 else {
            throw CheckpointError(.invalidArgument, "\(options.compressionThreads) compression threads; use 0 (compress on the calling thread) to 256")
        }
        self.options = options
        do {
            compressor = try Zstd.Compressor(level: options.level, workers: Int32(options.compressionThreads))
        } catch {
            throw CheckpointError(.compression, "cannot set up zstd at level \(options.level): \(error.message)")
        }
    }

    /// Encodes `tensor` (stored at `offset` in its blob) and passes its record and stored bytes
    /// to `body`; the bytes are valid only during the call.
    func encode<R>(_ tensor: NamedTensor, offset: Int, _ body: (CheckpointTensorRecord, UnsafeRawBufferPointer) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        let count = tensor.values.count
        let rawBytes = count * 4
        let rawHash = XXH64.hash(tensor.values)
        let shuffled = options.shuffles(elementCount: count)
        Self.ensure(&output, count: Zstd.compressBound(rawBytes))
        let compressedCount: Int
        do throws(Zstd.Failure) {
            if shuffled {
                Self.ensure(&planes, count: rawBytes)
                tensor.values.withUnsafeBufferPointer { floats in
                    floats.withMemoryRebound(to: UInt32.self) { words in
                        planes.withUnsafeMutableBytes { ByteShuffle.shuffle(words, into: UnsafeMutableRawBufferPointer(rebasing: $0[..<rawBytes])) }
                    }
                }
                compressedCount = try withRawBytes(planes) { (raw) throws(Zstd.Failure) in
                    try withMutableRawBytes(&output) { (out) throws(Zstd.Failure) in try compressor.compress(UnsafeRawBufferPointer(rebasing: raw[..<rawBytes]), into: out) }
                }
            } else {
                compressedCount = try withLittleEndianBytes(tensor.values) { (raw) throws(Zstd.Failure) in
                    try withMutableRawBytes(&output) { (out) throws(Zstd.Failure) in try compressor.compress(raw, into: out) }
                }
            }
        } catch {
            throw CheckpointError(.compression, "cannot compress tensor \(tensor.name) (\(rawBytes) bytes): \(error.message)")
        }
        func record(_ transform: CheckpointTransform, _ codec: CheckpointCodec, _ stored: UnsafeRawBufferPointer) -> CheckpointTensorRecord {
            CheckpointTensorRecord(
                name: tensor.name, shape: tensor.shape, transform: transform, codec: codec, offset: offset,
                rawBytes: rawBytes, storedBytes: stored.count,
                rawXXH64: CheckpointChecksum.hex(rawHash), storedXXH64: CheckpointChecksum.hex(XXH64.hash(bytes: stored))
            )
        }
        if compressedCount < rawBytes {
            return try withRawBytes(output) { (out) throws(CheckpointError) in
                let stored = UnsafeRawBufferPointer(rebasing: out[..<compressedCount])
                return try body(record(shuffled ? .byteplane4 : .none, .zstd, stored), stored)
            }
        }
        return try withLittleEndianBytes(tensor.values) { (raw) throws(CheckpointError) in try body(record(.none, .none, raw), raw) }
    }

    /// Grows `buffer` to at least `count` bytes (never shrinks it).
    static func ensure(_ buffer: inout [UInt8], count: Int) {
        if buffer.count < count { buffer = [UInt8](repeating: 0, count: count) }
    }
}

/// Decodes stored tensors, checking the stored checksum, the decompression and the raw
/// checksum, in that order. Keeps its scratch buffers from tensor to tensor. One per reader thread.
final class TensorDecoder {
    private let decompressor: Zstd.Decompressor?
    private var planes: [UInt8] = []
    private var scratch: [Float] = []

    init() {
        decompressor = try? Zstd.Decompressor()
    }

    /// A failed check of one tensor: which check, and what was found.
    struct Failure: Error {
        var kind: CheckpointError.Kind
        var detail: String
    }

    /// Checks the stored bytes' XXH64 only.
    static func checkStored(_ stored: UnsafeRawBufferPointer, _ record: CheckpointTensorRecord) throws(Failure) {
        let expected = CheckpointChecksum.parse(record.storedXXH64) ?? 0
        let actual = XXH64.hash(bytes: stored)
        guard actual == expected else {
            throw Failure(kind: .storedChecksum, detail: "compressed checksum mismatch (expected \(record.storedXXH64), got \(CheckpointChecksum.hex(actual)))")
        }
    }

    /// Before anything is allocated for a tensor: the sizes its manifest declares agree with
    /// its stored bytes (a zstd frame's header records the raw size), and this process can get
    /// the memory (a refused allocation is an error here, not an abort later).
    static func checkDeclaredSize(_ stored: UnsafeRawBufferPointer, _ record: CheckpointTensorRecord, buffers: Int) throws(Failure) {
        if record.codec == .zstd {
            guard let recorded = Zstd.frameContentSize(stored) else {
                throw Failure(kind: .decompression, detail: "the stored bytes are not a zstd frame that records its size")
            }
            guard recorded == UInt64(record.rawBytes) else {
                throw Failure(kind: .decompression, detail: "the zstd frame holds \(recorded) bytes, but the manifest declares \(record.rawBytes)")
            }
        }
        let needed = record.rawBytes * buffers
        guard let probe = malloc(max(1, needed)) else {
            throw Failure(kind: .decompression, detail: "cannot allocate \(needed >> 20) MiB to decode \(record.rawBytes >> 20) MiB of floats (the process's memory limit)")
        }
        free(probe)
    }

    /// The tensor's floats, fully checked. `stored` must hold exactly `record.storedBytes`.
    func decode(_ stored: UnsafeRawBufferPointer, _ record: CheckpointTensorRecord) throws(Failure) -> [Float] {
        try Self.checkDeclaredSize(stored, record, buffers: record.transform == .byteplane4 ? 2 : 1)
        var values = [Float](repeating: 0, count: record.rawBytes / 4)
        try values.withUnsafeMutableBufferPointer { (floats) throws(Failure) in try decode(stored, record, into: floats) }
        return values
    }

    /// Runs every check of `decode` without keeping the floats.
    func check(_ stored: UnsafeRawBufferPointer, _ record: CheckpointTensorRecord) throws(Failure) {
        try Self.checkDeclaredSize(stored, record, buffers: record.transform == .byteplane4 ? 2 : 1)
        let count = record.rawBytes / 4
        if scratch.count < count { scratch = [Float](repeating: 0, count: count) }
        try scratch.withUnsafeMutableBufferPointer { (floats) throws(Failure) in
            try decode(stored, record, into: UnsafeMutableBufferPointer(rebasing: floats[..<count]))
        }
    }

    /// Decodes into `output` (exactly `record.rawBytes / 4` floats).
    private func decode(_ stored: UnsafeRawBufferPointer, _ record: CheckpointTensorRecord, into output: UnsafeMutableBufferPointer<Float>) throws(Failure) {
        try Self.checkStored(stored, record)
        let bytes = UnsafeMutableRawBufferPointer(output)
        switch (record.codec, record.transform) {
        case (.none, .none):
            bytes.copyMemory(from: stored)
            Self.fromLittleEndian(output)
        case (.none, .byteplane4):
            output.withMemoryRebound(to: UInt32.self) { ByteShuffle.unshuffle(stored, into: $0) }
        case (.zstd, .none):
            try decompress(stored, into: bytes)
            Self.fromLittleEndian(output)
        case (.zstd, .byteplane4):
            TensorEncoder.ensure(&planes, count: record.rawBytes)
            let planeBytes = record.rawBytes
            try withMutableRawBytes(&planes) { (raw) throws(Failure) in
                let region = UnsafeMutableRawBufferPointer(rebasing: raw[..<planeBytes])
                try decompress(stored, into: region)
                output.withMemoryRebound(to: UInt32.self) { ByteShuffle.unshuffle(UnsafeRawBufferPointer(region), into: $0) }
            }
        }
        let expected = CheckpointChecksum.parse(record.rawXXH64) ?? 0
        let actual = Self.littleEndianHash(UnsafeBufferPointer(output))
        guard actual == expected else {
            throw Failure(kind: .rawChecksum, detail: "raw checksum mismatch after \(record.codec.rawValue)/\(record.transform.rawValue) decoding (expected \(record.rawXXH64), got \(CheckpointChecksum.hex(actual)))")
        }
    }

    private func decompress(_ stored: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(Failure) {
        guard let decompressor else { throw Failure(kind: .decompression, detail: "cannot allocate a zstd decompression context") }
        do {
            try decompressor.decompress(stored, into: output)
        } catch {
            throw Failure(kind: .decompression, detail: "zstd: \(error.message)")
        }
    }

    /// Little-endian bytes as read from the file → native floats.
    private static func fromLittleEndian(_ floats: UnsafeMutableBufferPointer<Float>) {
        #if _endian(big)
        for i in floats.indices { floats[i] = Float(bitPattern: UInt32(littleEndian: floats[i].bitPattern)) }
        #endif
    }

    /// XXH64 of the floats' little-endian bytes.
    private static func littleEndianHash(_ floats: UnsafeBufferPointer<Float>) -> UInt64 {
        #if _endian(little)
        return XXH64.hash(bytes: UnsafeRawBufferPointer(floats))
        #else
        return XXH64.hash(Array(floats))
        #endif
    }
}

/// Calls `body` with the floats' little-endian bytes (no copy on little-endian machines).
func withLittleEndianBytes<R, E: Error>(_ values: [Float], _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
    #if _endian(little)
    let result = values.withUnsafeBytes { raw in Result { () throws(E) in try body(raw) } }
    #else
    let swapped = values.map { $0.bitPattern.littleEndian }
    let result = swapped.withUnsafeBytes { raw in Result { () throws(E) in try body(raw) } }
    #endif
    return try result.get()
}
