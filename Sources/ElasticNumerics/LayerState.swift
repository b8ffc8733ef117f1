#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A named float32 tensor: what a checkpoint blob or a state-transfer message carries.
/// Equality is bitwise (NaN payloads and signed zeros count).
public struct NamedTensor: Sendable, Equatable {
    /// `weight`, `bias`, or a slot such as `weight.velocity`.
    public var name: String
    /// Dimensions, outermost first (W: [fanIn, fanOut]; b and slots of b: [fanOut]).
    public var shape: [Int]
    /// The elements, row-major; `shape.reduce(1, *)` of them.
    public var values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 } && shape.reduce(1, *) == values.count,
                     "tensor \(name): shape \(shape) does not hold \(values.count) values")
        self.name = name
        self.shape = shape
        self.values = values
    }

    public static func == (lhs: NamedTensor, rhs: NamedTensor) -> Bool {
        lhs.name == rhs.name && lhs.shape == rhs.shape && bitwiseEqual(lhs.values, rhs.values)
    }
}

/// Everything that must move with a layer (checkpoint, peer transfer): its spec, weight and
/// bias, and optimizer state. Gradients are not part of it (they are per step).
///
/// `tensors` holds, in order: `weight` [fanIn, fanOut], `bias` [fanOut], then the optimizer
/// slots of `OptimizerState` (e.g. `weight.velocity`, `bias.velocity`).
public struct LayerState: Sendable, Equatable {
    public var spec: LayerSpec
    /// Optimizer updates applied so far.
    public var optimizerStep: Int
    public var tensors: [NamedTensor]

    public init(spec: LayerSpec, optimizerStep: Int, tensors: [NamedTensor]) {
        self.spec = spec
        self.optimizerStep = optimizerStep
        self.tensors = tensors
    }

    /// The tensor with this name, if present.
    public func tensor(named name: String) -> NamedTensor? {
        tensors.first { $0.name == name }
    }

    /// A bitwise fingerprint (equal states, equal checksums; any flipped bit changes it with
    /// overwhelming probability): FNV-1a 64 over the little-endian bytes of fanIn, fanOut,
    /// optimizerStep (UInt64 each), the activation's name, then for every tensor in order its
    /// name, a 0 byte, its dimensions (UInt64 each) and the XXH64 (seed 0) of its float32
    /// little-endian bytes. About memory speed (XXH64), so it can run every step.
    public func checksum() -> UInt64 {
        var hash = FNV1a64()
        hash.combine(UInt64(spec.fanIn))
        hash.combine(UInt64(spec.fanOut))
        hash.combine(UInt64(optimizerStep))
        hash.combine(spec.activation.rawValue)
        for tensor in tensors {
            hash.combine(tensor.name)
            hash.combine(UInt8(0))
            for dimension in tensor.shape { hash.combine(UInt64(dimension)) }
            hash.combine(XXH64.hash(tensor.values))
        }
        return hash.value
    }
}

extension Layer {
    /// A snapshot of the layer's weights and optimizer state (shares storage until written).
    public var state: LayerState {
        LayerState(
            spec: spec,
            optimizerStep: optimizerState.step,
            tensors: [
                NamedTensor(name: "weight", shape: [spec.fanIn, spec.fanOut], values: weight),
                NamedTensor(name: "bias", shape: [spec.fanOut], values: bias),
            ] + optimizerState.slots
        )
    }

    /// A layer restored bit-exactly from `state`, with zero gradients. Throws
    /// `.stateMismatch` when the tensors are missing, misnamed or of the wrong shape.
    public init(state: LayerState) throws(NumericsError) {
        let spec = state.spec
        let tensors = state.tensors
        guard tensors.count >= 2 else {
            throw NumericsError(.stateMismatch, "layer state has \(tensors.count) tensors; it needs at least weight and bias")
        }
        guard tensors[0].name == "weight", tensors[0].shape == [spec.fanIn, spec.fanOut] else {
            throw NumericsError(.stateMismatch, "layer state's first tensor is \(tensors[0].name) \(tensors[0].shape); expected weight [\(spec.fanIn), \(spec.fanOut)]")
        }
        guard tensors[1].name == "bias", tensors[1].shape == [spec.fanOut] else {
            throw NumericsError(.stateMismatch, "layer state's second tensor is \(tensors[1].name) \(tensors[1].shape); expected bias [\(spec.fanOut)]")
        }
        let slots = Array(tensors[2...])
        guard state.optimizerStep >= 0 else {
            throw NumericsError(.stateMismatch, "negative optimizer step \(state.optimizerStep)")
        }
        if !slots.isEmpty {
            let known = [Optimizer.sgd(SGD()), Optimizer.adam(Adam())].map { OptimizerState.slotNames(for: $0) }
            guard known.contains(slots.map(\.name)) else {
                throw NumericsError(.stateMismatch, "unknown optimizer slots \(slots.map(\.name))")
            }
            for slot in slots {
                let expected = slot.name.hasPrefix("weight.") ? [spec.fanIn * spec.fanOut] : [spec.fanOut]
                guard slot.shape == expected else {
                    throw NumericsError(.stateMismatch, "optimizer slot \(slot.name) has shape \(slot.shape); expected \(expected)")
                }
            }
        }
        self.init(spec: spec, weight: tensors[0].values, bias: tensors[1].values)
        self.optimizerState = OptimizerState(step: state.optimizerStep, slots: slots)
    }

    /// Replaces weights and optimizer state with `state` (spec must match); zeroes gradients.
    public mutating func restore(_ state: LayerState) throws(NumericsError) {
        guard state.spec == spec else {
            throw NumericsError(.stateMismatch, "state is for a \(state.spec) layer, this one is \(spec)")
        }
        self = try Layer(state: state)
    }

    /// `state.checksum()`: equal on replicas that hold bit-identical weights and optimizer state.
    public func checksum() -> UInt64 { state.checksum() }
}

/// Float arrays equal bit for bit.
func bitwiseEqual(_ a: [Float], _ b: [Float]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { x in
        b.withUnsafeBytes { y in
            x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0
        }
    }
}
