import Foundation
import Testing

/// The deployment files (Dockerfile, cluster/compose.yaml, cluster/k8s/*.yaml, docs/deploy.md)
/// cannot be run here: no Docker engine, no Kubernetes. cluster/deploy-check.py reads them and
/// checks every command, flag, port, volume and reference against the built binary's --help
/// (docs/deploy.md says what it checks). Its self-test proves it strict: a flag renamed in the
/// CLI's help, a misspelt flag, a wrong port or dependency and the like must each be caught.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct DeploymentFilesTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs `python3 cluster/deploy-check.py --elastic <binary> EXTRA` (at most `deadline`) and
    /// returns its exit status and output.
    static func deployCheck(_ extra: [String], deadline: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
        let directory = try makeTemporaryDirectory("deploy-check")
        defer { try? FileManager.default.removeItem(at: directory) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", repository.appendingPathComponent("cluster/deploy-check.py").path, "--elastic", CLI.binary.path] + extra
        process.currentDirectoryURL = repository
        let output = directory.appendingPathComponent("deploy-check.out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = process.standardOutput
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while process.isRunning && clock.now < end { try await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw HarnessError("deploy-check \(extra.joined(separator: " ")) did not finish within \(deadline); killed")
        }
        return (process.terminationStatus, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
    }

    @Test func deploymentFilesMatchTheCLI() async throws {
        let result = try await Self.deployCheck([])
        print(result.output)
        #expect(result.status == 0, "deploy-check found problems:\n\(result.output)")
        #expect(result.output.contains("deploy-check: OK"))
        // It really looked: the controller, the workers and the docs' commands.
        #expect(result.output.contains("dials elastic-controller:7400 -> Service elastic-controller"))
        #expect(result.output.contains("--token from Secret elastic-join"))
        #expect(result.output.contains("elastic commands in its code blocks checked"))
    }

    @Test func validatorCatchesRenamedFlagsAndBrokenFiles() async throws {
        let result = try await Self.deployCheck(["--self-test"])
        print(result.output)
        #expect(result.status == 0, "a mutation was not caught:\n\(result.output)")
        #expect(result.output.contains("self-test: PASS"))
        #expect(result.output.contains("the CLI renames join's --data-advertise: cluster/k8s/50-workers.yaml"))
        #expect(result.output.contains("unknown flag --data-advertise"))
        let caught = result.output.components(separatedBy: "\n").filter { $0.hasPrefix("  ok    ") }.count
        #expect(caught >= 20, "only \(caught) mutations were caught")
    }
}
