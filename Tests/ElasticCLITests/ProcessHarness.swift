import ElasticServices
import Foundation
import Testing

/// The `elastic` binary under test: $ELASTIC_BIN, or the one built beside this test bundle.
enum CLI {
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["ELASTIC_BIN"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // Swift Testing may run from inside an .xctest bundle on some platforms.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("elastic")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("elastic")
    }

    /// Runs `elastic ARGS` to completion (at most `deadline`) and returns status, stdout, stderr.
    static func run(_ arguments: [String], in directory: URL, prefix: [String] = [], deadline: Duration = .seconds(60)) async throws -> (status: Int32, stdout: String, stderr: String) {
        let processes = ProcessGroup(directory: directory)
        defer { processes.killAll() }
        let process = try processes.spawn(name: "cli-\(UUID().uuidString.prefix(8))", arguments, prefix: prefix)
        let status = try await process.waitForExit(deadline: deadline)
        return (status, process.stdout, process.stderr)
    }
}

/// One spawned process, its output in files.
final class SpawnedProcess: @unchecked Sendable {
    let name: String
    let process: Process
    let stdoutFile: URL
    let stderrFile: URL

    init(name: String, process: Process, stdoutFile: URL, stderrFile: URL) {
        self.name = name
        self.process = process
        self.stdoutFile = stdoutFile
        self.stderrFile = stderrFile
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the process to end; throws (and kills it) after `deadline`.
    func waitForExit(deadline: Duration) async throws -> Int32 {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while process.isRunning {
            if clock.now > end {
                kill(pid, SIGKILL)
                process.waitUntilExit()
                throw HarnessError("\(name) (pid \(pid)) did not exit within \(deadline); killed. stderr:\n\(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Every process a test starts, so that all of them are ended by pid whatever happens.
final class ProcessGroup: @unchecked Sendable {
    let directory: URL
    private let lock = NSLock()
    private var processes: [SpawnedProcess] = []

    init(directory: URL) { self.directory = directory }

    func spawn(name: String, _ arguments: [String], prefix: [String] = []) throws -> SpawnedProcess {
        let process = Process()
        if prefix.isEmpty {
            process.executableURL = CLI.binary
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: prefix[0])
            process.arguments = Array(prefix.dropFirst()) + [CLI.binary.path] + arguments
        }
        process.currentDirectoryURL = directory
        let stdoutFile = directory.appendingPathComponent("\(name).out")
        let stderrFile = directory.appendingPathComponent("\(name).err")
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let spawned = SpawnedProcess(name: name, process: process, stdoutFile: stdoutFile, stderrFile: stderrFile)
        lock.withLock { processes.append(spawned) }
        return spawned
    }

    /// SIGCONT (a stopped process cannot die otherwise), then SIGKILL, every process still running.
    func killAll() {
        for process in lock.withLock({ processes }) where process.process.isRunning {
            kill(process.pid, SIGCONT)
            kill(process.pid, SIGKILL)
            process.process.waitUntilExit()
        }
    }

    /// Every process's stderr, for a failing test's report.
    var logs: String {
        lock.withLock { processes }.map { "--- \($0.name) (pid \($0.pid)) ---\n\($0.stderr)" }.joined(separator: "\n")
    }
}

func makeTemporaryDirectory(_ label: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("elastic-\(label)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Polls `condition` every 100 ms until it holds; throws after `deadline`.
func waitUntil(_ what: String, deadline: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let end = clock.now + deadline
    while clock.now < end {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw HarnessError("timed out after \(deadline) waiting for \(what)")
}

/// Runs `body` with a fresh directory and process group; every process is ended by pid and the
/// directory removed afterwards, and a failure is recorded with every process's log.
func withProcesses(_ label: String, _ body: (URL, ProcessGroup) async throws -> Void) async throws {
    let directory = try makeTemporaryDirectory(label)
    let processes = ProcessGroup(directory: directory)
    defer {
        processes.killAll()
        try? FileManager.default.removeItem(at: directory)
    }
    do {
        try await body(directory, processes)
    } catch {
        Issue.record("\(error)\n\(processes.logs)")
    }
}
