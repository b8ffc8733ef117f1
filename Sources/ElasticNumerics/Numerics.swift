// ElasticNumerics: the float32 math a worker runs (see DESIGN.md, "Numerics").
//
// - `Matrix` and `Kernels.sgemm` (OpenBLAS or the pure-Swift kernel, Matmul.swift);
// - `Layer` (Linear + activation, the unit of placement) and `Stage` (contiguous layers), with
//   forward caches and gradients that accumulate over micro-batches;
// - `SoftmaxCrossEntropy` (loss sums over a global-batch normalizer);
// - `Optimizer` (SGD with momentum, Adam/AdamW) and `LearningRateSchedule`;
// - `LayerState` for checkpoints and peer transfer, with a bitwise checksum;
// - `ModelSpec` / `W1` for deterministic initial weights.

/// An error from numerics input that came from outside the process (checkpoints, peers, data).
public struct NumericsError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// A `LayerState` does not fit the layer (missing tensor, wrong shape or spec).
        case stateMismatch
        /// A class label is negative or not below the number of classes.
        case labelOutOfRange
        /// A matrix or array has the wrong shape for the operation.
        case shapeMismatch
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
