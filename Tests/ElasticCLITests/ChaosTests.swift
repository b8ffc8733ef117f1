import Foundation
import Testing

/// A bounded chaos run (issue 4, test 3): cluster/chaos with a fixed seed injects at least 10
/// faults (SIGKILL, SIGSTOP/SIGCONT, joins, graceful leaves, at least one SIGKILL and restart of
/// the controller and, as root, workers cut off in network namespaces) while W1 trains on 2×2 with checkpoints, then checks the invariants and
/// that the latest checkpoint verifies; its verdict must pass.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct ChaosTests {
    @Test func seededChaosRunKeepsTheInvariants() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("cluster/chaos").path
        let directory = try makeTemporaryDirectory("chaos")
        defer { try? FileManager.default.removeItem(at: directory) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--seed", "7", "--faults", "12", "--steps", "800", "--time-limit", "170",
                             "--keep", directory.appendingPathComponent("run").path, "--elastic", CLI.binary.path]
        let output = directory.appendingPathComponent("chaos.out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = process.standardOutput
        try process.run()
        let clock = ContinuousClock()
        let end = clock.now + .seconds(240)
        while process.isRunning && clock.now < end { try await Task.sleep(for: .milliseconds(200)) }
        if process.isRunning {
            // SIGTERM lets the harness stop its cluster and remove its namespaces.
            kill(process.processIdentifier, SIGTERM)
            let grace = clock.now + .seconds(20)
            while process.isRunning && clock.now < grace { try await Task.sleep(for: .milliseconds(200)) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        print(text)
        #expect(process.terminationStatus == 0, "chaos verdict failed:\n\(text)")
        #expect(text.contains("verdict: PASS"))
        let faults = text.components(separatedBy: "\n").filter { $0.hasPrefix("  - ") }.count
        #expect(faults >= 10, "only \(faults) faults were injected")
        // Issue 7: the verdict holds across a SIGKILL of the controller and its restart.
        #expect(text.contains("SIGKILL the controller, restarted"), "no controller restart among the faults")
    }
}
