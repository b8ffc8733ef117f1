import ElasticCore
import ElasticNumerics
import Foundation

/// Measures what this machine offers: cores, memory and the matrix-multiply throughput of the
/// kernels training uses (a 512³ product with the configured threads).
public enum CapacityProbe {
    public static func measure() -> Capacity {
        Capacity(
            cores: UInt32(ProcessInfo.processInfo.activeProcessorCount),
            memoryBytes: ProcessInfo.processInfo.physicalMemory,
            gflops: Kernels.measureGFLOPS(m: 512, n: 512, k: 512, repetitions: 3))
    }
}
