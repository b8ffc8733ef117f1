/// Values that arrive from the network, each under a key its consumer knows in advance (step
/// and micro-batch for activations, phase/round/offset for all-reduce chunks). A consumer waits
/// for its key; a value that arrives first waits for its consumer. `fail` wakes every waiter
/// with the error (a lost peer, a new generation), and later takes fail at once until `reset`.
public actor Mailbox<Key: Hashable & Sendable, Value: Sendable> {
    private var values: [Key: Value] = [:]
    private var waiters: [Key: CheckedContinuation<Value, any Error>] = [:]
    private var failure: (any Error)?

    public init() {}

    public func deliver(_ value: Value, for key: Key) {
        if let waiter = waiters.removeValue(forKey: key) {
            waiter.resume(returning: value)
        } else if failure == nil {
            values[key] = value
        }
    }

    public func take(_ key: Key) async throws -> Value {
        if let failure { throw failure }
        if let value = values.removeValue(forKey: key) { return value }
        // A second consumer of one key is a computation that outlived its plan: the newer one
        // wins, the older one learns it was superseded.
        waiters.removeValue(forKey: key)?.resume(throwing: MailboxSuperseded(key: "\(key)"))
        return try await withCheckedThrowingContinuation { waiters[key] = $0 }
    }

    public func fail(_ error: any Error) {
        failure = error
        values.removeAll()
        let pending = waiters
        waiters.removeAll()
        for waiter in pending.values { waiter.resume(throwing: error) }
    }

    /// Drops everything, failed or not, for a new generation.
    public func reset() {
        values.removeAll()
        failure = nil
    }

    public var pendingCount: Int { values.count }
}

/// Thrown to a consumer when another one takes the same key.
public struct MailboxSuperseded: Error, Sendable, CustomStringConvertible {
    public let key: String
    public var description: String { "another consumer took \(key)" }
}
