/// Failed attempts per source (a bootstrap with a bad token, from one IP address), as token
/// buckets: a source may fail `burst` times at once, then once per `refill`; beyond that its
/// attempts are refused unheard (no token check, no log line, no event) until its bucket
/// refills, so that a flood can neither guess tokens nor push real events off the log. Pure:
/// time is passed in.
public struct FailureLimiter: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Failures a source may have at once.
        public var burst: Int = 5 {
            willSet { precondition(newValue >= 1, "burst must be at least 1") }
        }
        /// Time for one more allowed failure to accrue.
        public var refill: Duration = .seconds(10) {
            willSet { precondition(newValue > .zero, "refill must be positive") }
        }
        /// Sources remembered at most; the ones whose buckets are fullest are forgotten first.
        public var maximumSources: Int = 4096 {
            willSet { precondition(newValue >= 1, "maximumSources must be at least 1") }
        }

        public init() {}
    }

    private struct Bucket: Sendable {
        /// Failures still allowed, fractional while refilling.
        var allowance: Double
        var at: Timestamp
    }

    public let settings: Settings
    private var buckets: [String: Bucket] = [:]
    /// Attempts refused unheard since the last `takeSuppressed`, and from how many sources.
    public private(set) var suppressed = 0
    private var suppressedSources: Set<String> = []

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// Whether `source` may be heard now (it has failures left). When not, the attempt is
    /// counted as suppressed.
    public mutating func admits(_ source: String, now: Timestamp) -> Bool {
        guard allowance(of: source, now: now) < 1 else { return true }
        suppressed += 1
        if suppressedSources.count < settings.maximumSources { suppressedSources.insert(source) }
        return false
    }

    /// `source` failed once.
    public mutating func failed(_ source: String, now: Timestamp) {
        let left = allowance(of: source, now: now) - 1
        if buckets[source] == nil, buckets.count >= settings.maximumSources { forgetFullest(now: now) }
        buckets[source] = Bucket(allowance: max(0, left), at: now)
    }

    /// The suppressed count and its sources since the last call, and starts counting again.
    public mutating func takeSuppressed() -> (attempts: Int, sources: Int) {
        defer {
            suppressed = 0
            suppressedSources = []
        }
        return (suppressed, suppressedSources.count)
    }

    private func allowance(of source: String, now: Timestamp) -> Double {
        guard let bucket = buckets[source] else { return Double(settings.burst) }
        let accrued = Double(now.since(bucket.at).nanosecondsClamped) / Double(settings.refill.nanosecondsClamped)
        return min(Double(settings.burst), bucket.allowance + accrued)
    }

    private mutating func forgetFullest(now: Timestamp) {
        let fullest = buckets.keys.max { allowance(of: $0, now: now) < allowance(of: $1, now: now) }
        if let fullest { buckets[fullest] = nil }
    }
}
