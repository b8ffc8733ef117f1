import ElasticCore
import ElasticStorage
import Foundation
import Logging

/// The controller's durable state and the store that keeps it: every change goes through
/// `record`, which makes it durable before the caller acts on it (write-ahead). A store that
/// cannot write any more is fatal to the controller: acting on a change it could not record
/// would let a restart contradict what workers were told.
final class ControllerJournal: @unchecked Sendable {
    private let store: DurableStateStore
    private let logger: Logger
    private(set) var state: DurableState
    /// Called once when the store fails; the controller stops.
    private let onFailure: @Sendable (String) -> Void
    private(set) var failed = false

    init(store: DurableStateStore, state: DurableState, logger: Logger, onFailure: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.state = state
        self.logger = logger
        self.onFailure = onFailure
    }

    /// Makes the records durable; false when they could not be (the controller is stopping).
    @discardableResult
    func record(_ records: DurableState.Record...) -> Bool {
        record(records)
    }

    @discardableResult
    func record(_ records: [DurableState.Record]) -> Bool {
        guard !failed else { return false }
        guard !records.isEmpty else { return true }
        do {
            try store.append(records)
            for record in records { state.apply(record) }
            try store.appended(resultingIn: state)
            return true
        } catch {
            failed = true
            let reason = "the controller's journal cannot be written (\(error)); stopping so that nothing is acted on that a restart would not know — fix the data dir and start the controller again: workers keep their state and reconnect"
            logger.critical("\(reason)")
            onFailure(reason)
            return false
        }
    }
}
