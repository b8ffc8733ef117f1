#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The elementwise function after a layer's affine map.
public enum Activation: String, Sendable, Hashable, Codable, CaseIterable {
    /// Identity (e.g. the logits layer).
    case none
    /// max(0, z); the derivative at 0 is taken as 0 (as W1's reference does).
    case relu
    /// GELU, tanh approximation: 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))).
    case gelu
}

extension Activation {
    static let geluScale: Float = 0.797_884_56  // √(2/π)
    static let geluCubic: Float = 0.044_715

    /// Applies the activation in place.
    func apply(_ values: inout [Float]) {
        switch self {
        case .none:
            return
        case .relu:
            values.withUnsafeMutableBufferPointer { v in
                for i in v.indices { v[i] = v[i] > 0 ? v[i] : 0 }
            }
        case .gelu:
            values.withUnsafeMutableBufferPointer { v in
                for i in v.indices { v[i] = Activation.gelu(v[i]) }
            }
        }
    }

    @inline(__always)
    static func gelu(_ z: Float) -> Float {
        let t = tanhf(geluScale * (z + geluCubic * z * z * z))
        return 0.5 * z * (1 + t)
    }

    @inline(__always)
    static func geluDerivative(_ z: Float) -> Float {
        let t = tanhf(geluScale * (z + geluCubic * z * z * z))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * geluScale * (1 + 3 * geluCubic * z * z)
    }

    /// dZ = dOut ⊙ f'(z), in place on `gradient`. `saved` is what `Layer.forward` cached:
    /// the output for ReLU (positive exactly where z is), the pre-activation for GELU.
    func backward(_ gradient: inout [Float], saved: [Float]) {
        switch self {
        case .none:
            return
        case .relu:
            gradient.withUnsafeMutableBufferPointer { g in
                saved.withUnsafeBufferPointer { out in
                    for i in g.indices where !(out[i] > 0) { g[i] = 0 }
                }
            }
        case .gelu:
            gradient.withUnsafeMutableBufferPointer { g in
                saved.withUnsafeBufferPointer { z in
                    for i in g.indices { g[i] *= Activation.geluDerivative(z[i]) }
                }
            }
        }
    }
}
