/// Values that arrive from the network, each under a key its consumer knows in advance (step
/// and micro-batch for activations, phase/round/offset for all-reduce chunks). A consumer waits
/// for its key; a value that arrives first waits for its consumer. `fail` wakes every waiter
/// with the error (a lost peer, a new generation), and later takes fail at once until `reset`.
///
/// Bounded: values nobody waits for yet are kept up to `maximumCount` of them and
/// `maximumWeight` in all (bytes, by `weight`); `deliver` refuses one beyond that, so a peer
/// that sends values no step will take cannot grow this process without limit.
public actor Mailbox<Key: Hashable & Sendable, Value: Sendable> {
    private var values: [Key: (value: Value, weight: Int)] = [:]
    private var waiters: [Key: CheckedContinuation<Value, any Error>] = [:]
    private var failure: (any Error)?
    private let maximumCount: Int
    private let maximumWeight: Int
    private let weight: @Sendable (Value) -> Int
    private var pendingWeight = 0

    public init(maximumCount: Int = .max, maximumWeight: Int = .max, weight: @escaping @Sendable (Value) -> Int = { _ in 0 }) {
        self.maximumCount = maximumCount
        self.maximumWeight = maximumWeight
        self.weight = weight
    }

    /// Hands `value` to its consumer, or keeps it for one; false when it was refused because the
    /// values waiting would exceed the bounds (the sender is misbehaving).
    @discardableResult
    public func deliver(_ value: Value, for key: Key) -> Bool {
        if let waiter = waiters.removeValue(forKey: key) {
            waiter.resume(returning: value)
            return true
        }
        guard failure == nil else { return true }
        let size = weight(value)
        let replaced = values[key]?.weight ?? 0
        let count = values.count + (values[key] == nil ? 1 : 0)
        guard count <= maximumCount, pendingWeight - replaced + size <= maximumWeight else { return false }
        values[key] = (value, size)
        pendingWeight += size - replaced
        return true
    }

    public func take(_ key: Key) async throws -> Value {
        if let failure { throw failure }
        if let kept = values.removeValue(forKey: key) {
            pendingWeight -= kept.weight
            return kept.value
        }
        // A second consumer of one key is a computation that outlived its plan: the newer one
        // wins, the older one learns it was superseded.
        waiters.removeValue(forKey: key)?.resume(throwing: MailboxSuperseded(key: "\(key)"))
        return try await withCheckedThrowingContinuation { waiters[key] = $0 }
    }

    public func fail(_ error: any Error) {
        failure = error
        values.removeAll()
        pendingWeight = 0
        let pending = waiters
        waiters.removeAll()
        for waiter in pending.values { waiter.resume(throwing: error) }
    }

    /// Drops everything, failed or not, for a new generation.
    public func reset() {
        values.removeAll()
        pendingWeight = 0
        failure = nil
    }

    public var pendingCount: Int { values.count }
}

/// Thrown to a consumer when another one takes the same key.
public struct MailboxSuperseded: Error, Sendable, CustomStringConvertible {
    public let key: String
    public var description: String { "another consumer took \(key)" }
}
