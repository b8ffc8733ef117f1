import ElasticCore
import Foundation

/// The shells' clock: monotonic time for the core, wall time for logs and tokens.
public enum MonotonicClock {
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Timestamp(nanoseconds: UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec))
    }

    public static func wallSeconds() -> Int64 { Int64(Date().timeIntervalSince1970) }
}
