import ElasticNumerics
import Foundation

/// Where training stands in the data when the checkpoint was taken (DESIGN.md, invariant 2):
/// plain numbers from the caller's step ledger.
public struct CheckpointDataCursor: Codable, Sendable, Equatable {
    public var epoch: Int
    /// The next sample position within the epoch's permutation.
    public var offset: Int
    /// Samples consumed since the start of the run (all epochs).
    public var samplesConsumed: Int

    public init(epoch: Int, offset: Int, samplesConsumed: Int) {
        self.epoch = epoch
        self.offset = offset
        self.samplesConsumed = samplesConsumed
    }
}

/// The plan the checkpoint was written under, for the record: restore reads any checkpoint
/// into any plan, so nothing depends on it.
public struct CheckpointPlan: Codable, Sendable, Equatable {
    public struct Stage: Codable, Sendable, Equatable {
        public var firstLayer: Int
        /// Inclusive.
        public var lastLayer: Int
        public var replicas: Int
        /// Free-form member descriptions (node ids, addresses), one per slot or as the caller likes.
        public var members: [String]

        public init(firstLayer: Int, lastLayer: Int, replicas: Int, members: [String] = []) {
            self.firstLayer = firstLayer
            self.lastLayer = lastLayer
            self.replicas = replicas
            self.members = members
        }
    }

    public var stages: [Stage]

    public init(stages: [Stage]) { self.stages = stages }
}

/// What the caller (the controller) knows about a checkpoint and the storage does not: passed
/// to `commit` and copied into the manifest.
public struct CheckpointHeader: Codable, Sendable, Equatable {
    /// The membership generation the step was committed in.
    public var generation: UInt64
    /// Milliseconds since 1970-01-01 UTC.
    public var createdAt: Int64
    public var jobName: String
    /// A digest of the job spec, to refuse restoring into a different job (free-form string).
    public var jobSpecHash: String
    public var dataCursor: CheckpointDataCursor
    public var plan: CheckpointPlan

    public init(generation: UInt64, createdAt: Int64 = CheckpointHeader.now(), jobName: String, jobSpecHash: String,
                dataCursor: CheckpointDataCursor, plan: CheckpointPlan) {
        self.generation = generation
        self.createdAt = createdAt
        self.jobName = jobName
        self.jobSpecHash = jobSpecHash
        self.dataCursor = dataCursor
        self.plan = plan
    }

    /// The wall clock in milliseconds since the epoch.
    public static func now() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}

/// How a tensor's raw bytes were rearranged before compression.
public enum CheckpointTransform: String, Codable, Sendable, CaseIterable {
    /// Stored as is.
    case none
    /// Byte-plane shuffle of 4-byte elements: all bytes 0 (least significant), then all bytes
    /// 1, 2 and 3. Groups the slowly varying sign/exponent bytes of floats together.
    case byteplane4
}

/// How a (transformed) tensor is compressed.
public enum CheckpointCodec: String, Codable, Sendable, CaseIterable {
    case none
    /// One zstd frame that records its content size.
    case zstd
}

/// One tensor inside a blob file.
public struct CheckpointTensorRecord: Codable, Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    /// Always "float32" (little-endian IEEE 754) in format version 1.
    public var dtype: String
    public var transform: CheckpointTransform
    public var codec: CheckpointCodec
    /// Where its stored bytes start in the blob file.
    public var offset: Int
    /// 4 × elements.
    public var rawBytes: Int
    /// Bytes in the blob file (equal to `rawBytes` for codec none).
    public var storedBytes: Int
    /// XXH64 (seed 0) of the raw little-endian float32 bytes, 16 lowercase hex digits.
    public var rawXXH64: String
    /// XXH64 (seed 0) of the stored bytes as they are in the blob file.
    public var storedXXH64: String

    public init(name: String, shape: [Int], dtype: String = "float32", transform: CheckpointTransform, codec: CheckpointCodec,
                offset: Int, rawBytes: Int, storedBytes: Int, rawXXH64: String, storedXXH64: String) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.transform = transform
        self.codec = codec
        self.offset = offset
        self.rawBytes = rawBytes
        self.storedBytes = storedBytes
        self.rawXXH64 = rawXXH64
        self.storedXXH64 = storedXXH64
    }

    /// The element count the shape implies; nil when a dimension is negative or the product overflows.
    public var elementCount: Int? {
        var product = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (next, overflow) = product.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            product = next
        }
        return product
    }
}

/// One layer's blob file: its spec and optimizer step, then its tensors in order (the
/// `LayerState` tensors, then the extras), stored back to back.
public struct CheckpointBlobRecord: Codable, Sendable, Equatable {
    public var layer: Int
    /// `layer-NNNN.blob`, inside the checkpoint directory.
    public var file: String
    /// The blob file's length.
    public var bytes: Int
    public var spec: LayerSpec
    public var optimizerStep: Int
    /// The `LayerState` tensors, in their order (weight, bias, optimizer slots).
    public var tensors: [CheckpointTensorRecord]
    /// Extra per-layer state (gradient-codec residuals, …), in their order, after `tensors`.
    public var extras: [CheckpointTensorRecord]

    public init(layer: Int, file: String, bytes: Int, spec: LayerSpec, optimizerStep: Int,
                tensors: [CheckpointTensorRecord], extras: [CheckpointTensorRecord]) {
        self.layer = layer
        self.file = file
        self.bytes = bytes
        self.spec = spec
        self.optimizerStep = optimizerStep
        self.tensors = tensors
        self.extras = extras
    }

    /// Tensors then extras: the order of their bytes in the file.
    public var allTensors: [CheckpointTensorRecord] { tensors + extras }

    public var rawBytes: Int { allTensors.reduce(0) { $0 + $1.rawBytes } }
}

/// The zstd settings a writer used (informational: zstd frames decode with any level).
public struct CheckpointCompressionInfo: Codable, Sendable, Equatable {
    public var level: Int32
    /// The libzstd version, e.g. "1.5.4".
    public var libraryVersion: String

    public init(level: Int32, libraryVersion: String) {
        self.level = level
        self.libraryVersion = libraryVersion
    }
}

/// Which part (one per writer, e.g. one per pipeline stage) wrote which layers.
public struct CheckpointPartSummary: Codable, Sendable, Equatable {
    public var name: String
    public var layers: [Int]
    public var zstd: CheckpointCompressionInfo

    public init(name: String, layers: [Int], zstd: CheckpointCompressionInfo) {
        self.name = name
        self.layers = layers
        self.zstd = zstd
    }
}

/// `manifest.json` of a checkpoint directory (docs/checkpoint-format.md). Written last, after
/// every blob is durable: a directory with a manifest is complete.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    public static let fileName = "manifest.json"
    public static let formatName = "elastic-checkpoint"
    public static let currentVersion = 1
    /// Manifests larger than this are refused unread.
    public static let maximumSize = 64 << 20

    /// Always "elastic-checkpoint".
    public var format: String
    public var formatVersion: Int
    public var step: Int
    public var generation: UInt64
    /// Milliseconds since the epoch.
    public var createdAt: Int64
    public var jobName: String
    public var jobSpecHash: String
    public var dataCursor: CheckpointDataCursor
    public var plan: CheckpointPlan
    public var layerCount: Int
    /// The settings of the first part (by name); `parts` records each.
    public var zstd: CheckpointCompressionInfo
    public var parts: [CheckpointPartSummary]
    /// One per layer, in layer order.
    public var blobs: [CheckpointBlobRecord]

    public init(step: Int, header: CheckpointHeader, zstd: CheckpointCompressionInfo, parts: [CheckpointPartSummary], blobs: [CheckpointBlobRecord]) {
        format = Self.formatName
        formatVersion = Self.currentVersion
        self.step = step
        generation = header.generation
        createdAt = header.createdAt
        jobName = header.jobName
        jobSpecHash = header.jobSpecHash
        dataCursor = header.dataCursor
        plan = header.plan
        layerCount = blobs.count
        self.zstd = zstd
        self.parts = parts
        self.blobs = blobs
    }

    /// The caller-provided fields.
    public var header: CheckpointHeader {
        CheckpointHeader(generation: generation, createdAt: createdAt, jobName: jobName, jobSpecHash: jobSpecHash, dataCursor: dataCursor, plan: plan)
    }

    /// Raw bytes of every tensor.
    public var rawBytes: Int { blobs.reduce(0) { $0 + $1.rawBytes } }
    /// Bytes of every blob file.
    public var storedBytes: Int { blobs.reduce(0) { $0 + $1.bytes } }

    // MARK: - Encoding

    /// Pretty-printed JSON with sorted keys and a final newline, so equal manifests are equal files.
    public func encoded() -> [UInt8] { CheckpointJSON.encode(self) }

    /// Decodes and validates a manifest read from `path`; the error names the field.
    public static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> CheckpointManifest {
        // Read the format and version first, so a future version is reported as such and not
        // as a missing field.
        struct Preamble: Decodable { var format: String?; var formatVersion: Int? }
        let preamble = try CheckpointJSON.decode(Preamble.self, from: bytes, path: path, what: "checkpoint manifest")
        guard preamble.format == Self.formatName else {
            throw CheckpointError(.manifestInvalid, "\(path): format is \(preamble.format.map { "'\($0)'" } ?? "missing"), not '\(Self.formatName)': this is not a checkpoint manifest", path: path)
        }
        guard preamble.formatVersion == Self.currentVersion else {
            throw CheckpointError(.unsupportedVersion, "\(path) has checkpoint format version \(preamble.formatVersion.map(String.init) ?? "(missing)"); this build reads version \(Self.currentVersion): restore with a matching elastic", path: path)
        }
        let manifest = try CheckpointJSON.decode(CheckpointManifest.self, from: bytes, path: path, what: "checkpoint manifest")
        try manifest.validate(path: path)
        return manifest
    }

    /// Checks the manifest on its own (no file access): counts and ranges, one blob per layer in
    /// order with its canonical file name, and every blob's tensors (see
    /// `CheckpointBlobRecord.validate`).
    public func validate(path: String) throws(CheckpointError) {
        func invalid(_ what: String) -> CheckpointError {
            CheckpointError(.manifestInvalid, "\(path): \(what); the manifest is damaged — restore falls back to an older checkpoint", path: path)
        }
        guard step >= 0, step <= CheckpointLayout.maximumStep else { throw invalid("step \(step) is out of range") }
        guard createdAt >= 0 else { throw invalid("createdAt \(createdAt) is negative") }
        guard dataCursor.epoch >= 0, dataCursor.offset >= 0, dataCursor.samplesConsumed >= 0 else {
            throw invalid("the data cursor \(dataCursor) has a negative field")
        }
        guard layerCount >= 1, layerCount <= CheckpointLayout.maximumLayerCount else { throw invalid("layerCount \(layerCount) is out of range") }
        guard blobs.count == layerCount else { throw invalid("\(blobs.count) blobs for \(layerCount) layers") }
        for (index, blob) in blobs.enumerated() {
            guard blob.layer == index else { throw invalid("blob \(index) is for layer \(blob.layer); blobs must list layers 0…\(layerCount - 1) in order") }
            try blob.validate(path: path)
        }
    }
}

extension CheckpointBlobRecord {
    /// Checks the record on its own: canonical file name, a plausible spec, tensors with valid
    /// names and float32 shapes whose byte counts match, stored back to back from offset 0 and
    /// filling exactly `bytes`, with 16-digit checksums; weight and bias first, as `LayerState`
    /// requires.
    public func validate(path: String) throws(CheckpointError) {
        func invalid(_ what: String) -> CheckpointError {
            CheckpointError(.manifestInvalid, "\(path): blob \(file): \(what); the manifest is damaged — restore falls back to an older checkpoint", path: path)
        }
        guard layer >= 0, layer < CheckpointLayout.maximumLayerCount, file == CheckpointLayout.blobName(layer: layer) else {
            throw invalid("layer \(layer) does not match its file name (expected \(CheckpointLayout.blobName(layer: max(0, layer))))")
        }
        guard spec.fanIn >= 1, spec.fanOut >= 1, spec.fanIn <= 1 << 24, spec.fanOut <= 1 << 24 else {
            throw invalid("layer spec \(spec.fanIn)→\(spec.fanOut) is out of range")
        }
        guard optimizerStep >= 0 else { throw invalid("optimizer step \(optimizerStep) is negative") }
        guard tensors.count >= 2, tensors[0].name == "weight", tensors[1].name == "bias" else {
            throw invalid("the layer tensors are \(tensors.map(\.name)); they must start with weight and bias")
        }
        guard tensors[0].shape == [spec.fanIn, spec.fanOut], tensors[1].shape == [spec.fanOut] else {
            throw CheckpointError(.shape, "\(path): blob \(file): weight \(tensors[0].shape) and bias \(tensors[1].shape) do not fit the layer spec \(spec.fanIn)→\(spec.fanOut); the manifest is damaged — restore falls back to an older checkpoint", path: path)
        }
        var names = Set<String>()
        var next = 0
        for tensor in allTensors {
            guard CheckpointLayout.isValidTensorName(tensor.name) else { throw invalid("tensor name '\(tensor.name)' is not allowed") }
            guard names.insert(tensor.name).inserted else { throw invalid("tensor \(tensor.name) appears twice") }
            guard tensor.dtype == "float32" else {
                throw CheckpointError(.unsupportedVersion, "\(path): blob \(file) tensor \(tensor.name): dtype '\(tensor.dtype)'; this build reads only float32", path: path)
            }
            guard tensor.shape.count <= 8, let elements = tensor.elementCount, elements <= CheckpointLayout.maximumTensorElements else {
                throw CheckpointError(.shape, "\(path): blob \(file) tensor \(tensor.name): shape \(tensor.shape) is not a valid float32 shape (negative, too many dimensions or too large)", path: path)
            }
            guard tensor.rawBytes == elements * 4 else {
                throw CheckpointError(.shape, "\(path): blob \(file) tensor \(tensor.name): shape \(tensor.shape) holds \(elements * 4) bytes, but rawBytes is \(tensor.rawBytes)", path: path)
            }
            guard tensor.offset == next else {
                throw invalid("tensor \(tensor.name) starts at offset \(tensor.offset), not \(next) (tensors are stored back to back)")
            }
            guard tensor.storedBytes >= 0, tensor.storedBytes <= bytes - next else {
                throw invalid("tensor \(tensor.name) has \(tensor.storedBytes) stored bytes at offset \(tensor.offset), beyond the blob's \(bytes)")
            }
            guard tensor.codec != .none || tensor.storedBytes == tensor.rawBytes else {
                throw invalid("tensor \(tensor.name) is stored uncompressed but its stored size \(tensor.storedBytes) differs from its raw size \(tensor.rawBytes)")
            }
            guard tensor.codec != .zstd || tensor.rawBytes / Zstd.maximumExpansion <= tensor.storedBytes else {
                throw invalid("tensor \(tensor.name) declares \(tensor.rawBytes) raw bytes from \(tensor.storedBytes) stored, more than zstd can expand (a decompression bomb, or damage)")
            }
            guard CheckpointChecksum.parse(tensor.rawXXH64) != nil, CheckpointChecksum.parse(tensor.storedXXH64) != nil else {
                throw invalid("tensor \(tensor.name) has a checksum that is not 16 hex digits")
            }
            next += tensor.storedBytes
        }
        guard next == bytes else { throw invalid("the tensors fill \(next) bytes, but the blob is recorded as \(bytes)") }
    }
}

/// XXH64 values as the manifest writes them: 16 lowercase hex digits.
enum CheckpointChecksum {
    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func parse(_ text: String) -> UInt64? {
        guard text.utf8.count == 16, text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }) else { return nil }
        return UInt64(text, radix: 16)
    }
}

/// JSON the way checkpoints write it, and decoding errors that name the field.
enum CheckpointJSON {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding strings, integers and arrays of them cannot fail.
        return Array((try? encoder.encode(value)) ?? Data()) + [0x0A]
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], path: String, what: String) throws(CheckpointError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            throw CheckpointError(.manifestInvalid, "\(path) is not a valid \(what): \(describe(error)); the file is damaged — restore falls back to an older checkpoint", path: path)
        } catch {
            throw CheckpointError(.manifestInvalid, "\(path) is not a valid \(what): \(error)", path: path)
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func at(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "" : " at " + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return "the field '\(key.stringValue)' is missing\(at(context.codingPath))"
        case .typeMismatch(_, let context): return "wrong type\(at(context.codingPath))"
        case .valueNotFound(_, let context): return "a value is missing\(at(context.codingPath))"
        case .dataCorrupted(let context): return context.codingPath.isEmpty ? "not valid JSON" : "bad value\(at(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
