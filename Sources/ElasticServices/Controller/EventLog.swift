import ElasticCore
import Foundation
import Logging

/// The controller's append-only record of membership changes: one JSON object per line in
/// `<data-dir>/events.jsonl`, each written with a single `write` and also logged. Bounded: past
/// `maximumBytes` the file moves to `events.jsonl.1` (replacing the previous one) and a new one
/// starts, so a flood cannot fill the disk.
final class EventLog: @unchecked Sendable {
    static let maximumBytes = 16 << 20
    private var handle: FileHandle?
    private let file: URL
    private var bytes = 0
    private let logger: Logger
    private let lock = NSLock()
    private let formatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    init(file: URL, logger: Logger) throws {
        if !FileManager.default.fileExists(atPath: file.path) {
            guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw ElasticError("cannot create the event log \(file.path): check the data dir's permissions")
            }
        }
        // Node names, addresses and token ids: for the operator only, like the journal.
        _ = chmod(file.path, 0o600)
        handle = try FileHandle(forWritingTo: file)
        bytes = Int(try handle?.seekToEnd() ?? 0)
        self.file = file
        self.logger = logger
    }

    func record(_ event: Membership.Event) {
        var fields: [String: Any] = [:]
        let level: Logger.Level
        let text: String
        switch event {
        case let .joined(node, incarnation, address, generation):
            fields = ["event": "joined", "node": node.value, "incarnation": incarnation.value, "address": address, "generation": generation.value]
            level = .info
            text = "\(node) joined from \(address) as incarnation \(incarnation); generation \(generation)"
        case let .resumed(node, incarnation, generation):
            fields = ["event": "resumed", "node": node.value, "incarnation": incarnation.value, "generation": generation.value]
            level = .info
            text = "\(node) resumed incarnation \(incarnation)"
        case let .suspected(node, incarnation, reason, generation):
            fields = ["event": "suspected", "node": node.value, "incarnation": incarnation.value, "reason": reason.rawValue, "generation": generation.value]
            level = .warning
            text = "\(node) is suspect: \(reason.rawValue)"
        case let .recovered(node, incarnation, generation):
            fields = ["event": "recovered", "node": node.value, "incarnation": incarnation.value, "generation": generation.value]
            level = .info
            text = "\(node) is alive again"
        case let .died(node, incarnation, reason, silentFor, generation):
            fields = ["event": "died", "node": node.value, "incarnation": incarnation.value, "reason": reason.rawValue,
                      "silentForMs": silentFor.milliseconds, "generation": generation.value]
            level = .warning
            text = "\(node) incarnation \(incarnation) declared dead (\(reason.rawValue), silent for \(silentFor.shortDescription)); generation \(generation)"
        case let .left(node, incarnation, generation):
            fields = ["event": "left", "node": node.value, "incarnation": incarnation.value, "generation": generation.value]
            level = .info
            text = "\(node) left; generation \(generation)"
        case let .opened(reason, generation):
            fields = ["event": "generation", "reason": reason, "generation": generation.value]
            level = .info
            text = "generation \(generation): \(reason)"
        case let .paused(duration, forgiven, generation):
            fields = ["event": "paused", "durationMs": duration.milliseconds, "forgivenMs": forgiven.milliseconds, "generation": generation.value]
            level = .warning
            text = "controller paused for \(duration.secondsDescription); deadlines restarted"
        case let .refused(node, refusal, generation):
            fields = ["event": "refused", "node": node.value, "reason": refusal.explanation, "generation": generation.value]
            if case let .fenced(_, incarnation, _) = refusal { fields["incarnation"] = incarnation.value }
            level = .warning
            text = "refused \(node): \(refusal.explanation)"
        }
        logger.log(level: level, "\(text)")
        remember(kind: fields["event"] as? String ?? "membership", text: text)
        append(fields)
    }

    func recordBootstrap(node: String, address: String, outcome: String, reason: String, generation: Generation) {
        remember(kind: "bootstrap", text: "bootstrap of \(node) from \(address): \(outcome) (\(reason))")
        append(["event": "bootstrap", "node": node, "address": address, "outcome": outcome, "reason": reason, "generation": generation.value])
    }

    private func append(_ fields: [String: Any]) {
        var fields = fields
        fields["time"] = formatter.string(from: Date())
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        lock.lock()
        defer { lock.unlock() }
        do {
            if bytes + data.count + 1 > Self.maximumBytes { try rotate() }
            try handle?.write(contentsOf: data + Data("\n".utf8))
            bytes += data.count + 1
        } catch {
            logger.error("cannot append to the event log: \(error)")
        }
    }

    /// `events.jsonl` becomes `events.jsonl.1`; a new, empty one takes its place.
    private func rotate() throws {
        try handle?.close()
        let previous = file.appendingPathExtension("1")
        _ = rename(file.path, previous.path)
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw ElasticError("cannot start a new event log \(file.path) after moving the full one to \(previous.lastPathComponent)")
        }
        handle = try FileHandle(forWritingTo: file)
        bytes = 0
    }

    // MARK: - Recent events (the dashboard's)

    /// One line of the bounded in-memory record of recent events.
    struct RecentEvent: Sendable {
        let time: String
        let kind: String
        let text: String
    }

    /// How many recent events are kept in memory.
    static let recentCapacity = 200
    private let recentLock = NSLock()
    private var recentRing: [RecentEvent] = []
    private var recentNext = 0

    /// Remembers a training or checkpoint event for the dashboard; only membership events go to
    /// the file.
    func note(_ text: String, kind: String = "training") {
        remember(kind: kind, text: text)
    }

    /// The recent events, oldest first (at most `recentCapacity`).
    func recent() -> [RecentEvent] {
        recentLock.withLock { Array(recentRing[recentNext...] + recentRing[..<recentNext]) }
    }

    /// The newest recent event's text.
    var latest: String? {
        recentLock.withLock { recentRing.isEmpty ? nil : recentRing[(recentNext + recentRing.count - 1) % recentRing.count].text }
    }

    private func remember(kind: String, text: String) {
        let event = RecentEvent(time: formatter.string(from: Date()), kind: kind, text: text)
        recentLock.withLock {
            if recentRing.count < Self.recentCapacity {
                recentRing.append(event)
            } else {
                recentRing[recentNext] = event
                recentNext = (recentNext + 1) % Self.recentCapacity
            }
        }
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        try? handle?.synchronize()
        try? handle?.close()
    }
}
