import ElasticCore
import Foundation

/// Where a `ProgressReporter` writes.
public enum ProgressOutput: Sendable {
    /// A terminal: one live line, redrawn in place (`\r`, clear to the end of the line).
    case terminal(@Sendable (String) -> Void)
    /// A file, a pipe or a log: whole lines, at most one per interval and one per milestone,
    /// never a carriage return.
    case lines(@Sendable (String) -> Void)

    /// Standard error: a live line when it is a terminal, lines otherwise.
    public static var standardError: ProgressOutput {
        let write: @Sendable (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) }
        return isatty(STDERR_FILENO) != 0 ? .terminal(write) : .lines { write($0 + "\n") }
    }

    var isTerminal: Bool {
        if case .terminal = self { return true }
        return false
    }
}

/// What progress counts, for the rendering of amounts and rates.
public enum ProgressUnit: Sendable, Equatable {
    case bytes
    /// A count of things: "samples", "blobs", "shards".
    case items(String)
}

/// When to draw: on every milestone (a new phase or step, the end), otherwise at most once per
/// interval. Pure: the time is passed in.
public struct ProgressThrottle: Sendable, Equatable {
    public var interval: Duration
    private var last: Duration?

    public init(interval: Duration) {
        self.interval = interval
    }

    /// `now`: the time since the operation started.
    public mutating func shouldDraw(now: Duration, milestone: Bool) -> Bool {
        if milestone || last.map({ now - $0 >= interval }) ?? true {
            last = now
            return true
        }
        return false
    }
}

/// Progress of one long operation — a data set written, a checkpoint verified or copied, a
/// worker joining or restoring layers — on a terminal as a live bar, anywhere else as a line
/// every few seconds and one per milestone (so logs stay clean). One reporter per operation;
/// its methods may be called from any thread.
public final class ProgressReporter: @unchecked Sendable {
    private let title: String
    private let output: ProgressOutput
    private let started = ContinuousClock.now
    private let lock = NSLock()
    private var throttle: ProgressThrottle
    private var phase = ""
    private var phaseStarted = ContinuousClock.now
    private var open = false
    private var stepNumber = 0
    private let steps: Int?

    /// `title` starts every line ("data generate", "join"). `steps`: how many named steps the
    /// operation has, when it counts them ("step 2/4: …"). `interval`: between lines that are
    /// not milestones (default: 100 ms on a terminal, 3 s elsewhere).
    public init(_ title: String, output: ProgressOutput = .standardError, steps: Int? = nil, interval: Duration? = nil) {
        self.title = title
        self.output = output
        self.steps = steps
        self.throttle = ProgressThrottle(interval: interval ?? (output.isTerminal ? .milliseconds(100) : .seconds(3)))
    }

    /// A named step begins: always shown, on a line of its own.
    public func step(_ name: String) {
        lock.withLock {
            stepNumber += 1
            let counter = steps.map { "step \(stepNumber)/\($0): " } ?? ""
            emitLine("\(title): \(counter)\(name)")
        }
    }

    /// `completed` of `total` in `phase`; drawn when the throttle allows, and always when the
    /// phase changes or completes.
    public func update(_ phase: String, completed: Int, total: Int, unit: ProgressUnit) {
        lock.withLock {
            let now = ContinuousClock.now
            let milestone = phase != self.phase || completed >= total
            if phase != self.phase { phaseStarted = now }
            guard throttle.shouldDraw(now: now - started, milestone: milestone) else { return }
            self.phase = phase
            // Rates are over the current phase.
            let line = "\(title): " + Self.render(phase: phase, completed: completed, total: total, unit: unit, elapsed: now - phaseStarted)
            switch output {
            case .terminal(let write):
                write("\r" + line + "\u{1B}[K")
                open = true
            case .lines(let write):
                write(line)
            }
        }
    }

    /// Ends the operation: closes a live line, and shows `summary` if given.
    public func finish(_ summary: String? = nil) {
        lock.withLock {
            if let summary {
                emitLine("\(title): \(summary)")
            } else {
                closeLine()
            }
        }
    }

    /// The time since the reporter was made.
    public var elapsed: Duration { ContinuousClock.now - started }

    private func emitLine(_ text: String) {
        switch output {
        case .terminal(let write):
            write((open ? "\r\u{1B}[K" : "") + text + "\n")
            open = false
        case .lines(let write):
            write(text)
        }
    }

    private func closeLine() {
        if open, case .terminal(let write) = output { write("\n") }
        open = false
    }

    /// "writing [##########··········] 50 % 4.0 MiB/8.0 MiB · 12.5 MB/s"
    public static func render(phase: String, completed: Int, total: Int, unit: ProgressUnit, elapsed: Duration) -> String {
        let fraction = total > 0 ? min(1, Double(max(0, completed)) / Double(total)) : 1
        var text = "\(phase) \(progressBar(fraction: fraction, width: 20)) \(Int((fraction * 100).rounded(.down))) %"
        switch unit {
        case .bytes:
            text += " \(byteCount(UInt64(max(0, completed))))/\(byteCount(UInt64(max(0, total))))"
            let seconds = Double(elapsed.nanosecondsClamped) / 1e9
            if seconds >= 0.05, completed > 0 { text += " · " + megabytesPerSecond(bytes: completed, seconds: seconds) }
        case .items(let name):
            text += " \(completed)/\(total) \(name)"
        }
        return text
    }
}

/// "[#####···············]": `fraction` (0…1) of `width` cells.
public func progressBar(fraction: Double, width: Int) -> String {
    let clamped = fraction.isFinite ? min(1, max(0, fraction)) : 0
    let filled = Int((clamped * Double(width)).rounded(.down))
    return "[" + String(repeating: "#", count: filled) + String(repeating: "·", count: max(0, width - filled)) + "]"
}

extension Duration {
    /// Seconds as a floating-point number.
    public var inSeconds: Double { Double(nanosecondsClamped) / 1e9 }
}

/// "12.5 MB/s" (decimal megabytes, as disks and links are quoted).
public func megabytesPerSecond(bytes: Int, seconds: Double) -> String {
    guard seconds > 0 else { return "- MB/s" }
    return String(format: "%.1f MB/s", Double(bytes) / 1e6 / seconds)
}
