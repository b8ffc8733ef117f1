import ElasticTestSupport
import ElasticServices
import Foundation
import Testing

/// A controller with a job and its workers as real processes in one directory, for the
/// training and elasticity tests. Every process is in `processes`, ended by pid by the test.
struct ClusterHarness {
    let directory: URL
    let processes: ProcessGroup
    let controller: SpawnedProcess
    let address: String
    let token: String
    let hash: String
    /// The controller's data dir, relative to `directory`.
    let name: String

    var data: String { directory.appendingPathComponent(name).path }

    /// Starts a controller with `job` of `directory`, its data dir `name`, and `arguments` added.
    static func start(in directory: URL, processes: ProcessGroup, name: String = "controller", job: String = "job.json", arguments: [String] = []) async throws -> ClusterHarness {
        let data = directory.appendingPathComponent(name).path
        _ = try await CLI.run(["certs", "init", "--dir", data], in: directory)
        let controller = try processes.spawn(name: name, ["controller", "--listen", "127.0.0.1:0", "--data-dir", data, "--job", job] + arguments)
        let addressFile = directory.appendingPathComponent("\(name)/controller.address")
        try await waitUntil("the controller to listen") {
            if !controller.process.isRunning { throw HarnessError("the controller exited: \(controller.stderr)") }
            return FileManager.default.fileExists(atPath: addressFile.path)
        }
        let address = try String(contentsOf: addressFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let token = try await CLI.run(["token", "create", "--data-dir", data], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let hash = try await CLI.run(["certs", "hash", "--dir", data], in: directory).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return ClusterHarness(directory: directory, processes: processes, controller: controller, address: address, token: token, hash: hash, name: name)
    }

    @discardableResult
    func join(_ name: String) throws -> SpawnedProcess {
        try processes.spawn(name: name, [
            "join", address, "--token", token, "--ca-hash", hash, "--name", name,
            "--data-dir", name, "--data-listen", "127.0.0.1:0",
        ])
    }

    /// The committed steps so far, in order.
    func ledger() -> [[String: Any]] {
        let text = (try? String(contentsOf: directory.appendingPathComponent("\(name)/ledger.jsonl"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    func status() async throws -> StatusReport {
        let result = try await CLI.run(["status", "--json", "--data-dir", data], in: directory)
        guard result.status == 0 else { throw HarnessError("elastic status failed: \(result.stderr)") }
        return try JSONDecoder().decode(StatusReport.self, from: Data(result.stdout.utf8))
    }

    /// Waits until `count` steps are committed; fails early if training stopped.
    func waitForSteps(_ count: Int, deadline: Duration = .seconds(240)) async throws {
        try await waitUntil("\(count) committed steps", deadline: deadline) {
            if controller.stderr.contains("training stopped") { throw HarnessError("training stopped: \(controller.stderr)") }
            return ledger().count >= count
        }
    }

    func waitForFinish(deadline: Duration = .seconds(240)) async throws {
        try await waitUntil("the job to finish", deadline: deadline) {
            let log = controller.stderr
            if log.contains("training stopped") { throw HarnessError("training stopped: \(log)") }
            return log.contains("finished:")
        }
    }

    func stopController() async throws {
        controller.signal(SIGTERM)
        _ = try await controller.waitForExit(deadline: .seconds(15))
    }
}

/// A W1 job file of `steps` steps on a fixed plan, reading the data set at `data`.
func w1Job(stages: Int, replicas: Int, steps: Int, inputs: Int = 256, data: String = "data", checkpoint: [String: Any]? = nil) -> [String: Any] {
    var job: [String: Any] = [
        "name": "w1-\(stages)x\(replicas)",
        "model": [
            "inputs": inputs,
            "layers": [512, 512, 512, 512].map { ["outputs": $0, "activation": "relu"] } + [["outputs": 10, "activation": "none"]],
            "initialization": "w1",
        ] as [String: Any],
        "data": ["path": data],
        "batch": 256, "microBatches": 2,
        "optimizer": ["kind": "sgd", "learningRate": 0.05, "momentum": 0.9],
        "steps": steps, "seed": 42,
        "plan": ["stages": stages, "replicas": replicas],
    ]
    if let checkpoint { job["checkpoint"] = checkpoint }
    return job
}

func writeJSON(_ object: [String: Any], to url: URL) throws {
    try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted]).write(to: url)
}

/// The numpy reference's losses for the first `steps` steps on `samples` W1 samples.
func referenceLosses(samples: Int, steps: Int) throws -> [Double] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", try W1Reference.scriptPath(), "--samples", String(samples), "--steps", String(steps)]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw HarnessError("the numpy reference failed (is python3 with numpy installed?)")
    }
    let losses = output.split(separator: "\n").compactMap { line -> Double? in
        let parts = line.split(separator: " ")
        return parts.count == 4 ? Double(parts[3]) : nil
    }
    guard losses.count == steps else { throw HarnessError("the reference printed \(losses.count) losses, expected \(steps)") }
    return losses
}
