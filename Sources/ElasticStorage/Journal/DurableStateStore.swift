import ElasticCore
import Foundation

/// Where a controller keeps its `DurableState`. The controller talks only to this interface:
/// the journal in its data dir is one backend; a replicated store (etcd, for a standby
/// controller that takes over) is another, implementing the same three calls, without any
/// change to the core or to the controller's logic.
public protocol DurableStateStore: AnyObject, Sendable {
    /// Reads the state back: the last snapshot with every later record applied.
    func load() throws -> DurableStateLoad
    /// Makes the records durable, in order; returns only once they would survive a crash.
    func append(_ records: [DurableState.Record]) throws
    /// Called after appends with the state they led to: the store may compact (replace its
    /// history by this state) when it sees fit.
    func appended(resultingIn state: DurableState) throws
}

public struct DurableStateLoad: Sendable {
    public var state: DurableState
    /// Records replayed on top of the snapshot.
    public var replayed: Int
    /// Whether a snapshot was found.
    public var fromSnapshot: Bool
    /// What was dropped from a torn or damaged end, in words.
    public var dropped: String?
}

/// The journal backend: `RecordLog` in a directory, each record one JSON document, compacted
/// by a snapshot once the log has grown past `compactAfterBytes`.
public final class JournalStore: DurableStateStore, @unchecked Sendable {
    private let log: RecordLog
    /// What the log held when opened; dropped once `load` has decoded it (under `lock`).
    private var opened: RecordLog.Opened?
    private let lock = NSLock()
    public let compactAfterBytes: Int
    public var directory: String { log.directory }

    public init(directory: String, compactAfterBytes: Int = 4 << 20) throws {
        (log, opened) = try RecordLog.open(directory: directory)
        self.compactAfterBytes = compactAfterBytes
    }

    /// Decodes what the log held when it was opened; once per store (the bytes are released).
    public func load() throws -> DurableStateLoad {
        let taken = lock.withLock { () -> RecordLog.Opened? in
            defer { opened = nil }
            return opened
        }
        guard let opened = taken else { throw JournalError("the journal in \(log.directory) was already loaded; open a new JournalStore to read it again") }
        let decoder = Self.decoder()
        var state = DurableState()
        if let snapshot = opened.snapshot {
            do {
                state = try decoder.decode(DurableState.self, from: Data(snapshot.payload))
            } catch {
                throw JournalError("the journal snapshot in \(log.directory) passed its checksum but does not decode (\(error)); was it written by another version of elastic?")
            }
        }
        for (index, payload) in opened.records.enumerated() {
            do {
                state.apply(try decoder.decode(DurableState.Record.self, from: Data(payload)))
            } catch {
                throw JournalError("journal record \(index + 1) after the snapshot in \(log.directory) passed its checksum but does not decode (\(error)); was it written by another version of elastic?")
            }
        }
        return DurableStateLoad(state: state, replayed: opened.records.count, fromSnapshot: opened.snapshot != nil, dropped: opened.dropped)
    }

    public func append(_ records: [DurableState.Record]) throws {
        let encoder = Self.encoder()
        try log.append(records.map { Array(try encoder.encode($0)) })
    }

    public func appended(resultingIn state: DurableState) throws {
        guard log.bytesSinceSnapshot >= compactAfterBytes else { return }
        try compact(state)
    }

    /// Replaces the history by `state` now.
    public func compact(_ state: DurableState) throws {
        try log.compact(Array(try Self.encoder().encode(state)))
    }

    public var bytesSinceSnapshot: Int { log.bytesSinceSnapshot }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // A diverged run's loss is NaN or infinite; JSON has no numbers for those.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
