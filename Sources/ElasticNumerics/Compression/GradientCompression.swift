import ElasticCore

// Gradient compression for the data-parallel exchange (DESIGN.md, "Gradient compression"):
// the pure numerical part. Nothing here does I/O; the network layer drives these value types.
//
// - `GradientCompression`: the job's choice (codec + size threshold), parsed from a `Spec`;
// - `ElementCodec`: float32 / fp16 / bf16 / int8 element encodings for the ring all-reduce;
// - `SparseGradient` and `TopKCompressor`: top-k with error feedback, all-gathered;
// - `PowerSGDCompressor`: rank-r PowerSGD with error feedback and warm start;
// - `TensorCompressor` / `LayerCompressor`: the per-tensor choice and its exportable state;
// - `GradientTraffic`: the bytes a replica sends and receives per step.
//
// The reduction is a SUM over replicas, as `RingAllReduce` computes it (the loss is already
// normalized by the global batch); every "reduced" input below means that sum.

/// An error from compression input that came from outside the process: a job spec, a peer's
/// payload, a checkpoint's codec state, or a protocol step called out of order.
public struct CompressionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// The job's compression settings are invalid (the message names the field).
        case invalidSpec
        /// Encoded bytes from a peer are malformed (size, bounds, order, format).
        case malformedPayload
        /// Exported codec state does not fit this tensor (missing tensor, wrong shape).
        case stateMismatch
        /// A protocol call came out of order or with a buffer of the wrong size.
        case protocolViolation
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The gradient compression of a job: one codec for every tensor with at least
/// `minimumElements` elements; smaller tensors (biases) cross uncompressed.
public struct GradientCompression: Sendable, Hashable {
    public enum Codec: Sendable, Hashable {
        /// float32, as without compression.
        case none
        /// IEEE binary16, round to nearest even (2 bytes per element).
        case fp16
        /// bfloat16, round to nearest even (2 bytes per element).
        case bf16
        /// int8 with one float32 absmax scale per `chunk` elements (≈1 byte per element).
        case int8(chunk: Int)
        /// The largest ⌈fraction·n⌉ corrected elements with error feedback, all-gathered, their
        /// values crossing as `values` (bf16 by default; the rounding stays in the residual).
        /// The first `warmupSteps` steps of the job cross uncompressed, or, with a
        /// `warmupFraction`, select a fraction that falls exponentially from it to `fraction`.
        case topk(fraction: Double, values: SparseGradient.ValueFormat = .bf16, warmupSteps: Int = 0, warmupFraction: Double? = nil)
        /// PowerSGD of rank `rank` with error feedback and warm start; the first `warmupSteps`
        /// steps of the job cross uncompressed.
        case powersgd(rank: Int, warmupSteps: Int)

        /// The codec's name in a spec.
        public var name: String {
            switch self {
            case .none: "none"
            case .fp16: "fp16"
            case .bf16: "bf16"
            case .int8: "int8"
            case .topk: "topk"
            case .powersgd: "powersgd"
            }
        }
    }

    /// Tensors with fewer elements than this are never compressed.
    public static let defaultMinimumElements = 4096
    /// int8 elements per scale when the spec does not say.
    public static let defaultInt8Chunk = 512
    /// The names a spec's `codec` accepts.
    public static let codecNames = ["none", "fp16", "bf16", "int8", "topk", "powersgd"]

    public var codec: Codec
    /// Tensors with fewer elements cross uncompressed (float32).
    public var minimumElements: Int

    /// No compression.
    public static let none = GradientCompression(codec: .none)

    /// Traps on invalid settings; use `init(spec:)` for settings from outside.
    public init(codec: Codec, minimumElements: Int = GradientCompression.defaultMinimumElements) {
        self.codec = codec
        self.minimumElements = minimumElements
        if let problem = spec.problem() { preconditionFailure(problem) }
    }

    /// The settings of `spec`, or `.invalidSpec` naming the offending field.
    public init(spec: Spec) throws(CompressionError) {
        if let problem = spec.problem() { throw CompressionError(.invalidSpec, problem) }
        let codec: Codec = switch spec.codec {
        case "fp16": .fp16
        case "bf16": .bf16
        case "int8": .int8(chunk: spec.chunk ?? Self.defaultInt8Chunk)
        case "topk": .topk(fraction: spec.fraction!, values: spec.values == "float32" ? .float32 : .bf16,
                           warmupSteps: spec.warmupSteps ?? 0, warmupFraction: spec.warmupFraction)
        case "powersgd": .powersgd(rank: spec.rank!, warmupSteps: spec.warmupSteps ?? 0)
        default: .none
        }
        self.codec = codec
        self.minimumElements = spec.minimumElements ?? Self.defaultMinimumElements
    }

    /// The spec of these settings (every field explicit); `init(spec:)` gives them back.
    public var spec: Spec {
        var spec = Spec(codec: codec.name, minimumElements: minimumElements)
        switch codec {
        case .none, .fp16, .bf16: break
        case .int8(let chunk): spec.chunk = chunk
        case .topk(let fraction, let values, let warmupSteps, let warmupFraction):
            spec.fraction = fraction
            spec.values = values.name
            spec.warmupSteps = warmupSteps
            spec.warmupFraction = warmupFraction
        case .powersgd(let rank, let warmupSteps):
            spec.rank = rank
            spec.warmupSteps = warmupSteps
        }
        return spec
    }

    /// The job-spec form (JSON `compression` object), defined with the job spec in ElasticCore.
    public typealias Spec = JobSpec.Compression
}

/// How one tensor's gradient crosses the data-parallel group (see `TensorCompressor`).
public enum GradientExchange: Sendable, Hashable {
    /// Ring all-reduce whose messages are encoded with the codec (`.float32`: uncompressed).
    /// Reduce-scatter hop: decode the received chunk, add it to the local one in float32
    /// (`ElementCodec.decodeAdd`), encode the sum to forward. All-gather: the owner encodes its
    /// reduced segment once and also decodes its own bytes back into its buffer; the others
    /// decode and forward the received bytes unchanged. So every replica ends bit-identical.
    case ring(ElementCodec)
    /// Top-k with error feedback: `TopKCompressor.compress`, all-gather of the encoded
    /// `SparseGradient`s (values as `values`), then `SparseGradient.sum` over them in replica
    /// order.
    case sparseAllGather(fraction: Double, values: SparseGradient.ValueFormat)
    /// PowerSGD: `begin` → all-reduce P (float32) → `middle` → all-reduce Q (float32) →
    /// `finish(reducedQ:)`. Warm-up steps (`begin` returns `.uncompressed`) use
    /// `.ring(.float32)`.
    case lowRank(rank: Int, warmupSteps: Int)
}
