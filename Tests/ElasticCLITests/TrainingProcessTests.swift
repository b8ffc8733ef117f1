import ElasticServices
import Foundation
import Testing

/// Training W1 on real processes over loopback (issue 3, tests 2 and 5).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct TrainingProcessTests {
    static let samples = 4096
    static let steps = 50

    /// 1×1, 1×2, 2×1, 2×2 and 4×1 give the reference's losses within 1e-3 relative, every step's
    /// replicas agree, and the ledger's data cursor moves by one batch per step (4096 samples:
    /// 16 steps an epoch, so the 50 steps cross three epoch boundaries).
    @Test func everyPlanMatchesTheReference() async throws {
        let directory = try makeTemporaryDirectory("train")
        defer { try? FileManager.default.removeItem(at: directory) }
        let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples), "--shards", "3"], in: directory)
        try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
        let reference = try referenceLosses(samples: Self.samples, steps: Self.steps)

        for (stages, replicas) in [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)] {
            let run = directory.appendingPathComponent("run-\(stages)x\(replicas)")
            try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
            try writeJSON(w1Job(stages: stages, replicas: replicas, steps: Self.steps, data: "../data"), to: run.appendingPathComponent("job.json"))
            let processes = ProcessGroup(directory: run)
            defer { processes.killAll() }
            do {
                let ledger = try await Self.train(in: run, workers: stages * replicas, processes: processes)
                try #require(ledger.count == Self.steps, "\(stages)×\(replicas): \(ledger.count) steps committed")
                for (step, entry) in ledger.enumerated() {
                    let loss = entry["loss"] as? Double ?? .nan
                    #expect(abs(loss - reference[step]) <= 1e-3 * abs(reference[step]), "\(stages)×\(replicas) step \(step): \(loss) vs reference \(reference[step])")
                    #expect(entry["replicasAgree"] as? Bool == true, "\(stages)×\(replicas) step \(step): replicas disagree")
                    // The data cursor: (epoch, next sample) moves one batch per step, 16 steps an epoch.
                    #expect(entry["epoch"] as? Int == step / 16 && entry["nextSample"] as? Int == (step % 16 + 1) * 256, "\(stages)×\(replicas) step \(step): cursor \(entry)")
                }
            } catch {
                Issue.record("\(stages)×\(replicas): \(error)\n\(processes.logs)")
            }
        }
    }

    /// Starts a controller with `job.json` and `workers` workers in `directory`, waits until the
    /// job finishes, stops the controller, and returns the ledger's entries.
    static func train(in directory: URL, workers: Int, processes: ProcessGroup) async throws -> [[String: Any]] {
        let cluster = try await ClusterHarness.start(in: directory, processes: processes)
        for index in 1...workers { try cluster.join("w\(index)") }
        try await cluster.waitForFinish()
        try await cluster.stopController()
        return cluster.ledger()
    }

    /// A malformed job, a shard with a bad checksum and a data set with the wrong feature count
    /// are refused, with one clear line, before any training starts.
    @Test func badJobsAndDataAreRefusedBeforeTraining() async throws {
        let directory = try makeTemporaryDirectory("refuse")
        defer { try? FileManager.default.removeItem(at: directory) }
        let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", "512", "--shards", "2"], in: directory)
        try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
        _ = try await CLI.run(["certs", "init", "--dir", "ctl"], in: directory)

        func refused(_ job: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let result = try await CLI.run(["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl", "--job", job], in: directory, deadline: .seconds(30))
            #expect(result.status != 0, sourceLocation: sourceLocation)
            let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") }
            #expect(errors.count == 1 && errors[0].contains(expected), "expected '\(expected)' in:\n\(result.stderr)", sourceLocation: sourceLocation)
            let ledger = (try? String(contentsOf: directory.appendingPathComponent("ctl/ledger.jsonl"), encoding: .utf8)) ?? ""
            #expect(ledger.isEmpty, "no step may run", sourceLocation: sourceLocation)
        }

        try "{ \"name\": \"broken\", ".write(to: directory.appendingPathComponent("malformed.json"), atomically: true, encoding: .utf8)
        try await refused("malformed.json", "job file: not valid JSON")

        var missing = w1Job(stages: 1, replicas: 1, steps: Self.steps)
        missing["batch"] = nil
        try writeJSON(missing, to: directory.appendingPathComponent("missing.json"))
        try await refused("missing.json", "missing field 'batch'")

        var badBatch = w1Job(stages: 1, replicas: 1, steps: Self.steps)
        badBatch["batch"] = 0
        try writeJSON(badBatch, to: directory.appendingPathComponent("batch.json"))
        try await refused("batch.json", "batch: must be at least 1")

        try writeJSON(w1Job(stages: 1, replicas: 1, steps: Self.steps, inputs: 255), to: directory.appendingPathComponent("features.json"))
        try await refused("features.json", "it has 256 features, the model's first layer expects 255")

        // Flip one byte in the payload of a shard.
        let shards = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("data").path).filter { $0 != "manifest.json" }.sorted()
        let shard = directory.appendingPathComponent("data/\(try #require(shards.first))")
        var bytes = try Data(contentsOf: shard)
        bytes[bytes.count - 100] ^= 0x55
        try bytes.write(to: shard)
        try writeJSON(w1Job(stages: 1, replicas: 1, steps: Self.steps), to: directory.appendingPathComponent("good.json"))
        try await refused("good.json", "checksum")
    }
}
