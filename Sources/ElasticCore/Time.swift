/// A point on a monotonic clock, in nanoseconds from an arbitrary origin. The core never reads a
/// clock: shells pass `now` in, tests move a fake one.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static let zero = Timestamp(nanoseconds: 0)
    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Timestamp, rhs: Duration) -> Timestamp {
        let delta = rhs.nanosecondsClamped
        return Timestamp(nanoseconds: lhs.nanoseconds &+ UInt64(max(0, delta)))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    public func since(_ earlier: Timestamp) -> Duration {
        guard nanoseconds > earlier.nanoseconds else { return .zero }
        return .nanoseconds(Int64(clamping: nanoseconds - earlier.nanoseconds))
    }

    public var description: String { "t+\(nanoseconds / 1_000_000)ms" }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64.max`.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).overflow ? .max : scaled + attoseconds / 1_000_000_000
    }

    /// The duration in whole milliseconds.
    public var milliseconds: Int64 { nanosecondsClamped / 1_000_000 }

    /// Parses `500ms`, `2s`, `1.5s`, `30m`, `1h`, `7d` (a number and a unit). Returns nil for
    /// anything else, so the caller can say what it expected.
    public init?(parsing text: String) {
        // "ms" comes before "s" and "m": "5ms" ends with both.
        let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard let value = Double(number), value.isFinite, value >= 0, !number.isEmpty,
                  number.allSatisfy({ $0.isNumber || $0 == "." }) else { continue }
            let nanos = value * scale * 1e9
            guard nanos < 9e18 else { return nil }
            self = .nanoseconds(Int64(nanos))
            return
        }
        return nil
    }

    /// Seconds with one decimal, rounded: `6.0 s`, `0.4 s`.
    public var secondsDescription: String {
        let tenths = (milliseconds + 50) / 100
        return "\(tenths / 10).\(tenths % 10) s"
    }

    /// A short human form: `500ms`, `2s`, `1m30s`.
    public var shortDescription: String {
        let ms = milliseconds
        if ms < 1000 { return "\(ms)ms" }
        if ms % 1000 != 0 && ms < 60_000 { return "\(ms / 1000).\((ms % 1000) / 100)s" }
        let s = ms / 1000
        if s < 60 { return "\(s)s" }
        if s < 3600 { return s % 60 == 0 ? "\(s / 60)m" : "\(s / 60)m\(s % 60)s" }
        return s % 3600 == 0 ? "\(s / 3600)h" : "\(s / 3600)h\((s % 3600) / 60)m"
    }
}
