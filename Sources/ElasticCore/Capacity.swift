/// What a worker offers, reported when it joins; the planner weighs workers by it.
public struct Capacity: Hashable, Sendable {
    /// Logical cores the worker may use.
    public var cores: UInt32
    /// Physical memory in bytes.
    public var memoryBytes: UInt64
    /// Measured float32 matrix-multiply throughput, in GFLOP/s.
    public var gflops: Double

    public init(cores: UInt32, memoryBytes: UInt64, gflops: Double) {
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.gflops = gflops
    }
}
