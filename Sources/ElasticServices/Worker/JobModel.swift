import ElasticCore
import ElasticNumerics

/// What a job spec means to the numerics: the layers, the optimizer and the learning-rate
/// schedule. One place, used by every worker and by single-process training.
extension JobSpec {
    public var modelSpec: ModelSpec {
        let widths = self.widths
        return ModelSpec(layers: model.layers.enumerated().map { index, layer in
            LayerSpec(fanIn: widths[index], fanOut: widths[index + 1], activation: Activation(rawValue: layer.activation) ?? .none)
        })
    }

    public var numericOptimizer: ElasticNumerics.Optimizer {
        let weightDecay = Float(optimizer.weightDecay ?? 0)
        switch optimizer.kind {
        case "adam":
            return .adam(Adam(
                beta1: Float(optimizer.beta1 ?? 0.9), beta2: Float(optimizer.beta2 ?? 0.999),
                epsilon: Float(optimizer.epsilon ?? 1e-8), weightDecay: weightDecay))
        default:
            return .sgd(SGD(momentum: Float(optimizer.momentum ?? 0.9), weightDecay: weightDecay))
        }
    }

    public func learningRateSchedule(totalSteps: Int) -> LearningRateSchedule {
        let rate = Float(optimizer.learningRate)
        switch schedule?.kind {
        case "cosine":
            return .warmupCosine(peak: rate, warmupSteps: schedule?.warmupSteps ?? 0, totalSteps: totalSteps, minimum: rate * Float(schedule?.minimumFactor ?? 0))
        case "step":
            return .stepDecay(initial: rate, factor: Float(schedule?.factor ?? 1), interval: schedule?.every ?? 1)
        default:
            return .constant(rate)
        }
    }

    /// The initial layers of `range`, from the job's seed (W1's rule for every job).
    public func initialStage(_ range: Range<Int>) -> Stage {
        Stage(layers: modelSpec.initialLayers(range, seed: seed))
    }
}
