#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The learning rate as a pure function of the (0-based, global) optimizer step. It never
/// depends on the number of workers (DESIGN.md invariant 4).
public enum LearningRateSchedule: Sendable, Hashable, Codable {
    /// The same rate at every step.
    case constant(Float)
    /// Linear warm-up to `peak` over `warmupSteps` (step t < warmupSteps gets
    /// peak·(t+1)/warmupSteps), then cosine decay from `peak` at step `warmupSteps` to `minimum`
    /// at step `totalSteps`, and `minimum` after it.
    case warmupCosine(peak: Float, warmupSteps: Int, totalSteps: Int, minimum: Float = 0)
    /// initial · factor^⌊t / interval⌋.
    case stepDecay(initial: Float, factor: Float, interval: Int)

    /// The learning rate for step `step` (negative steps count as 0).
    public func learningRate(at step: Int) -> Float {
        let t = max(0, step)
        switch self {
        case .constant(let rate):
            return rate
        case .warmupCosine(let peak, let warmup, let total, let minimum):
            if t < warmup {
                return Float(Double(peak) * Double(t + 1) / Double(warmup))
            }
            let span = max(1, total - warmup)
            let progress = min(1, Double(t - warmup) / Double(span))
            let cosine = 0.5 * (1 + cos(Double.pi * progress))
            return Float(Double(minimum) + (Double(peak) - Double(minimum)) * cosine)
        case .stepDecay(let initial, let factor, let interval):
            precondition(interval > 0, "step decay needs a positive interval")
            return Float(Double(initial) * pow(Double(factor), Double(t / interval)))
        }
    }
}
