#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Softmax cross-entropy over rows of logits, for global batches split across micro-batches
/// and replicas: every part returns the loss *sum* over its rows and dLogits already divided by
/// the global batch size, so the parts add up to the mean loss and its gradient.
public enum SoftmaxCrossEntropy {
    /// The loss of one micro-batch.
    public struct Result: Sendable {
        /// Σ over rows of −log softmax(logits)[label] (not divided by anything).
        public var lossSum: Double
        /// Rows whose largest logit (first maximum) is the label.
        public var correct: Int
        /// d(lossSum / normalizer)/dLogits, rows × classes.
        public var dLogits: Matrix
    }

    /// Evaluates a micro-batch. `labels` has one class index per row; `normalizer` is the global
    /// batch size B. Stable: each row is shifted by its maximum; the log-sum-exp is in float64.
    public static func evaluate(logits: Matrix, labels: [Int32], normalizer: Int) throws(NumericsError) -> Result {
        guard labels.count == logits.rows else {
            throw NumericsError(.shapeMismatch, "\(labels.count) labels for \(logits.rows) rows of logits")
        }
        guard normalizer > 0 else {
            throw NumericsError(.shapeMismatch, "the loss normalizer (global batch size) must be positive, got \(normalizer)")
        }
        let classes = logits.cols
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= classes }) {
            throw NumericsError(.labelOutOfRange, "label \(bad) is outside 0..<\(classes)")
        }
        var dLogits = Matrix(rows: logits.rows, cols: classes)
        let scale = Float(normalizer)
        var lossSum = 0.0
        var correct = 0
        logits.values.withUnsafeBufferPointer { z in
            dLogits.values.withUnsafeMutableBufferPointer { d in
                for r in 0..<logits.rows {
                    let row = z.baseAddress! + r * classes
                    let out = d.baseAddress! + r * classes
                    let label = Int(labels[r])
                    var maximum = row[0]
                    var argmax = 0
                    for j in 1..<max(classes, 1) where row[j] > maximum {
                        maximum = row[j]
                        argmax = j
                    }
                    var sum = 0.0
                    for j in 0..<classes { sum += exp(Double(row[j] - maximum)) }
                    let logSum = log(sum)
                    lossSum += logSum - Double(row[label] - maximum)
                    if argmax == label { correct += 1 }
                    for j in 0..<classes {
                        var p = Float(exp(Double(row[j] - maximum) - logSum))
                        if j == label { p -= 1 }
                        out[j] = p / scale
                    }
                }
            }
        }
        return Result(lossSum: lossSum, correct: correct, dLogits: dLogits)
    }
}
