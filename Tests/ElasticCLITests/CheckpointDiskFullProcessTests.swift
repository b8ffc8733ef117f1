import ElasticServices
import Foundation
import Testing

/// Checkpoints on a full disk, with real processes: the checkpoint root is a small tmpfs that
/// this test mounts (as root) and fills. Training goes on, each failed checkpoint removes its
/// partial directory, `elastic status --json` says that checkpoints fail and why, and once space
/// is freed the next checkpoint is written and verifies.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct CheckpointDiskFullProcessTests {
    static let samples = 4096
    static let steps = 160

    /// Runs `command` to completion; its exit status.
    @discardableResult
    private static func run(_ command: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    private static func incoming(in root: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).filter { $0.hasPrefix(".incoming-") }
    }

    @Test(.enabled(if: getuid() == 0, "mounts a tmpfs: needs root (CI runs as root)"))
    func checkpointsOnAFullDiskFailCleanlyAndRecoverWhenSpaceIsFreed() async throws {
        try await withProcesses("elastic-disk-full") { directory, processes in
            let root = directory.appendingPathComponent("checkpoints")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            // 24 MiB, of which the ballast takes all but about 2 MiB: no W1 checkpoint fits.
            try #require(try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", root.path]) == 0, "mount tmpfs failed")
            defer { _ = try? Self.run("/bin/umount", ["-l", root.path]) }
            let ballast = root.appendingPathComponent("ballast")
            try #require(try Self.run("/usr/bin/fallocate", ["-l", "22m", ballast.path]) == 0, "fallocate failed")

            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            try writeJSON(w1Job(stages: 2, replicas: 2, steps: Self.steps, checkpoint: ["every": 10, "keep": 1, "directory": "checkpoints"]),
                          to: directory.appendingPathComponent("job.json"))
            let cluster = try await ClusterHarness.start(in: directory, processes: processes)
            for name in ["w1", "w2", "w3", "w4"] { try cluster.join(name) }

            // Checkpoints fail, and status says so and why.
            var failing: StatusReport.Training.Checkpoints?
            try await waitUntil("status to report failing checkpoints", deadline: .seconds(120)) {
                failing = try await cluster.status().training?.checkpoints
                return (failing?.consecutiveFailures ?? 0) >= 2
            }
            let report = try #require(failing)
            #expect(report.failing && report.newestStep == nil, "\(report)")
            #expect(report.lastFailure?.contains("space") == true, "the reason names the full disk: \(report)")
            let text = try await CLI.run(["status", "--data-dir", cluster.data], in: directory)
            #expect(text.stdout.contains("checkpoints: FAILING"), "status: \(text.stdout)")
            // Each failed checkpoint removed its partial directory (one may be in flight).
            try await waitUntil("failed checkpoints' directories to go", deadline: .seconds(30)) { Self.incoming(in: root).count <= 1 }

            // Space is freed: the next checkpoint is written, committed and verifies.
            let failedSteps = cluster.ledger().count
            try FileManager.default.removeItem(at: ballast)
            var recovered: StatusReport.Training.Checkpoints?
            try await waitUntil("a checkpoint after space was freed", deadline: .seconds(120)) {
                recovered = try await cluster.status().training?.checkpoints
                return recovered?.newestStep != nil
            }
            #expect(recovered?.failing == false && (recovered?.failures ?? 0) >= 2, "\(String(describing: recovered))")
            let newest = try #require(recovered?.newestStep)
            #expect(Int(newest) > failedSteps - 10, "the checkpoint after the freed space is a new one: step \(newest)")
            let verified = try await CLI.run(["checkpoint", "verify", root.appendingPathComponent(String(format: "step-%08d", newest)).path], in: directory)
            #expect(verified.status == 0, "verify: \(verified.stdout) \(verified.stderr)")

            try await cluster.waitForFinish()
            let steps = cluster.ledger().compactMap { $0["step"] as? Int }
            #expect(steps == Array(0..<Self.steps), "training went on through the failures: \(steps)")
            try await waitUntil("no partial checkpoint left", deadline: .seconds(20)) { Self.incoming(in: root).isEmpty }
            let latest = try await CLI.run(["checkpoint", "verify", root.appendingPathComponent("latest").path], in: directory)
            #expect(latest.status == 0 && latest.stdout.contains("\(Self.steps)"), "the final checkpoint: \(latest.stdout) \(latest.stderr)")
            let metrics = try await cluster.status()
            #expect(metrics.training?.checkpoints?.failing == false)
            try await cluster.stopController()
        }
    }
}
