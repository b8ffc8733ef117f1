import Dispatch
import ElasticCore
import Foundation

/// The W1 data set exactly as docs/w1.md defines it (and reference/w1.py
/// computes it): features are standard normals from the stream `seed + 1`, labels come from a
/// fixed random teacher network drawn from the stream `seed`.
///
/// Sample i depends only on (seed, i), never on the sample count, so any range of samples can
/// be generated on its own (`generate(seed:range:)`), in parallel or on a worker.
public enum W1Dataset {
    public static let defaultSeed: UInt64 = 42
    public static let defaultSamples = 65_536
    public static let featureCount = 256
    public static let hiddenWidth = 64
    public static let classes = 10

    /// The teacher: T1 (256×64, row-major) normals × 1/√256, then T2 (64×10) normals × 1/√64,
    /// from the stream `seed`. Each normal is rounded to float32, then multiplied by the
    /// float32 scale (as the reference does).
    public struct Teacher: Sendable, Equatable {
        public let t1: [Float]
        public let t2: [Float]

        public init(seed: UInt64) {
            var rng = SplitMix64(seed: seed)
            let scale1 = Float(1.0 / Double(W1Dataset.featureCount).squareRoot())
            let scale2 = Float(1.0 / Double(W1Dataset.hiddenWidth).squareRoot())
            t1 = (0..<W1Dataset.featureCount * W1Dataset.hiddenWidth).map { _ in Float(rng.normal()) * scale1 }
            t2 = (0..<W1Dataset.hiddenWidth * W1Dataset.classes).map { _ in Float(rng.normal()) * scale2 }
        }

        /// The logits relu(x·T1)·T2 of one sample, accumulated in float64. Products of two
        /// float32 values are exact in float64, so these sums are far closer to the exact
        /// values than any float32 order; the argmax agrees with numpy's float32 result on
        /// every one of W1's 65 536 samples (the smallest top-two margin is about 2e-6).
        public func logits(_ x: UnsafeBufferPointer<Float>) -> [Double] {
            precondition(x.count == W1Dataset.featureCount)
            var logits = [Double](repeating: 0, count: W1Dataset.classes)
            logits.withUnsafeMutableBufferPointer { out in
                withUnsafeTemporaryAllocation(of: Double.self, capacity: W1Dataset.hiddenWidth) { hidden in
                    t1.withUnsafeBufferPointer { t1 in
                        t2.withUnsafeBufferPointer { t2 in
                            Self.logits(x.baseAddress!, t1.baseAddress!, t2.baseAddress!, hidden.baseAddress!, out.baseAddress!)
                        }
                    }
                }
            }
            return logits
        }

        /// The class of one sample: argmax of its logits, the first maximum winning.
        public func label(_ x: UnsafeBufferPointer<Float>) -> Int32 {
            Self.argmax(logits(x))
        }

        static func argmax(_ values: some Collection<Double>) -> Int32 {
            var best = 0
            var bestValue = -Double.infinity
            for (k, value) in values.enumerated() where value > bestValue {
                best = k
                bestValue = value
            }
            return Int32(best)
        }

        // The hot loop: plain pointer arithmetic so that a release build vectorizes it and a
        // debug build stays usable.
        @inline(__always)
        static func logits(_ x: UnsafePointer<Float>, _ t1: UnsafePointer<Float>, _ t2: UnsafePointer<Float>, _ hidden: UnsafeMutablePointer<Double>, _ out: UnsafeMutablePointer<Double>) {
            let h = W1Dataset.hiddenWidth
            let c = W1Dataset.classes
            hidden.initialize(repeating: 0, count: h)
            for i in 0..<W1Dataset.featureCount {
                let xi = Double(x[i])
                let row = t1 + i * h
                for j in 0..<h { hidden[j] += xi * Double(row[j]) }
            }
            for k in 0..<c { out[k] = 0 }
            for j in 0..<h where hidden[j] > 0 {
                let hj = hidden[j]
                let row = t2 + j * c
                for k in 0..<c { out[k] += hj * Double(row[k]) }
            }
        }
    }

    /// Samples 0..<samples of W1 with `seed` (the whole data set by default). `samples` must
    /// not be negative (callers taking it from a user check it first; `write` does).
    public static func generate(seed: UInt64 = defaultSeed, samples: Int = defaultSamples, progress: DatasetProgressHandler = { _ in }) -> LabelledSamples {
        precondition(samples >= 0, "a sample count is not negative")
        return generate(seed: seed, range: 0..<samples, progress: progress)
    }

    /// Samples `range` of W1 with `seed`: the same values those samples have in any larger
    /// generation. Runs in parallel over blocks of samples; reports progress (in samples) on the
    /// calling thread.
    public static func generate(seed: UInt64 = defaultSeed, range: Range<Int>, progress: DatasetProgressHandler = { _ in }) -> LabelledSamples {
        precondition(range.lowerBound >= 0, "sample indices start at 0")
        let teacher = Teacher(seed: seed)
        let count = range.count
        let width = featureCount
        var features = [Float](repeating: 0, count: count * width)
        var labels = [Int32](repeating: 0, count: count)
        let block = 512
        let blocks = (count + block - 1) / block
        let blocksPerRound = max(1, 8 * ProcessInfo.processInfo.activeProcessorCount)
        progress(DatasetProgress(phase: .generating, completed: 0, total: count, unit: .samples))
        features.withUnsafeMutableBufferPointer { features in
            labels.withUnsafeMutableBufferPointer { labels in
                let featureBase = SendablePointer(features.baseAddress!)
                let labelBase = SendablePointer(labels.baseAddress!)
                var round = 0
                while round * blocksPerRound < blocks {
                    let firstBlock = round * blocksPerRound
                    let roundBlocks = min(blocksPerRound, blocks - firstBlock)
                    DispatchQueue.concurrentPerform(iterations: roundBlocks) { b in
                        let start = (firstBlock + b) * block
                        let end = min(start + block, count)
                        fill(teacher: teacher, seed: seed, globalStart: range.lowerBound + start, count: end - start,
                             features: featureBase.pointer + start * width, labels: labelBase.pointer + start)
                    }
                    round += 1
                    progress(DatasetProgress(phase: .generating, completed: min(count, (firstBlock + roundBlocks) * block), total: count, unit: .samples))
                }
            }
        }
        return LabelledSamples(featureCount: width, classes: classes, features: features, labels: labels)
    }

    /// Generates W1 and writes it as a data set of `shards` shards named "w1", with the origin
    /// "w1 seed S samples N".
    @discardableResult
    public static func write(
        to directory: String,
        seed: UInt64 = defaultSeed,
        samples: Int = defaultSamples,
        shards: Int = 1,
        overwrite: Bool = false,
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> DatasetManifest {
        guard samples >= 1, samples <= Int(Int32.max) else {
            throw DatasetError(.invalidArgument, "W1 needs 1 to 2^31−1 samples, not \(samples)")
        }
        let data = generate(seed: seed, samples: samples, progress: progress)
        return try Dataset.write(data, to: directory, shards: shards, name: "w1", origin: origin(seed: seed, samples: samples), overwrite: overwrite, progress: progress)
    }

    /// The manifest origin of a W1 data set.
    public static func origin(seed: UInt64, samples: Int) -> String { "w1 seed \(seed) samples \(samples)" }

    /// Features and labels of `count` samples from global index `globalStart`. Normal m of the
    /// input stream uses draws 2m+1 and 2m+2 of the stream `seed + 1`; the stream seeded with
    /// `s + k·γ` yields draw k+i of the stream `s` as its draw i, so each block starts its own
    /// generator at the right place.
    private static func fill(teacher: Teacher, seed: UInt64, globalStart: Int, count: Int, features: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        let width = featureCount
        let skip = UInt64(2 * globalStart * width)
        var rng = SplitMix64(seed: (seed &+ 1) &+ skip &* 0x9E37_79B9_7F4A_7C15)
        for v in 0..<count * width { features[v] = Float(rng.normal()) }
        teacher.t1.withUnsafeBufferPointer { t1 in
            teacher.t2.withUnsafeBufferPointer { t2 in
                withUnsafeTemporaryAllocation(of: Double.self, capacity: hiddenWidth + classes) { scratch in
                    let hidden = scratch.baseAddress!
                    let logits = hidden + hiddenWidth
                    for s in 0..<count {
                        Teacher.logits(features + s * width, t1.baseAddress!, t2.baseAddress!, hidden, logits)
                        labels[s] = Teacher.argmax(UnsafeBufferPointer(start: logits, count: classes))
                    }
                }
            }
        }
    }
}

/// A raw pointer handed to `concurrentPerform` blocks that write disjoint ranges.
struct SendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}
