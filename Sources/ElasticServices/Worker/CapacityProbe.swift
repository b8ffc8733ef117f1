import ElasticCore
import Foundation

/// Measures what this machine offers: cores, memory and a short float32 matrix-multiply run.
public enum CapacityProbe {
    public static func measure(duration: Duration = .milliseconds(150)) -> Capacity {
        Capacity(
            cores: UInt32(ProcessInfo.processInfo.activeProcessorCount),
            memoryBytes: ProcessInfo.processInfo.physicalMemory,
            gflops: measureGFLOPS(duration: duration))
    }

    /// Repeats a 64×64×64 multiply (loop order i-k-j, which vectorizes) for about `duration`.
    static func measureGFLOPS(duration: Duration) -> Double {
        let n = 64
        let a = [Float](repeating: 1.0001, count: n * n)
        let b = [Float](repeating: 0.9999, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        let clock = ContinuousClock()
        let start = clock.now
        var runs = 0
        repeat {
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        for i in 0..<n {
                            for k in 0..<n {
                                let aik = a[i * n + k]
                                for j in 0..<n { c[i * n + j] += aik * b[k * n + j] }
                            }
                        }
                    }
                }
            }
            runs += 1
        } while clock.now - start < duration
        let seconds = Double((clock.now - start).nanosecondsClamped) / 1e9
        let flops = 2.0 * Double(n * n * n) * Double(runs)
        return c[0].isFinite ? flops / seconds / 1e9 : 0
    }
}
