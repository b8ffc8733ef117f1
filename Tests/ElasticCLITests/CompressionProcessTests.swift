import Foundation
import Testing

/// Gradient compression on real processes (issue 6, test 3): W1 for 300 steps on 2 replicas
/// with each codec reaches a final loss within the measured bound of the uncompressed run's,
/// with the traffic the codec promises.
@Suite(.serialized, .timeLimit(.minutes(15)))
struct CompressionProcessTests {
    /// The full W1: 300 steps stay within 1.2 epochs, where the loss is far from zero (on a small
    /// data set the model overfits and relative differences of tiny losses mean nothing).
    static let samples = 65_536
    static let steps = 300

    /// Mean loss over the last 30 steps (single steps are noisy on this small data set).
    func tail(_ ledger: [[String: Any]]) -> Double {
        let losses = ledger.suffix(30).compactMap { $0["loss"] as? Double }
        return losses.reduce(0, +) / Double(max(1, losses.count))
    }

    func train(_ label: String, compression: [String: Any], in directory: URL, processes: ProcessGroup) async throws -> (tail: Double, status: String) {
        var job = w1Job(stages: 1, replicas: 2, steps: Self.steps)
        job["compression"] = compression
        try writeJSON(job, to: directory.appendingPathComponent("\(label).json"))
        let cluster = try await ClusterHarness.start(in: directory, processes: processes, name: label, job: "\(label).json")
        let workers = try (0..<2).map { try cluster.join("\(label)-w\($0)") }
        try await cluster.waitForFinish(deadline: .seconds(300))
        let status = try await CLI.run(["status", "--data-dir", cluster.data], in: directory).stdout
        for worker in workers { worker.signal(SIGKILL) }
        try await cluster.stopController()
        return (tail(cluster.ledger()), status)
    }

    @Test func everyCodecTrainsW1() async throws {
        try await withProcesses("elastic-compression") { directory, processes in
            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            let baseline = try await train("none", compression: ["codec": "none"], in: directory, processes: processes)
            // (codec, relative bound on the final loss, least compression ratio in status). The
            // bounds are what was measured (docs/compression.md), with a margin: the casts and
            // int8 land within 0.1 % of none; PowerSGD rank 4 about 5 % above it after 300 steps
            // (rank 8: 1.4 %), top-k 1 % about 27 % above it (with momentum correction; bf16 or
            // float32 values alike). Ratios: top-k 1 % with bf16 values and Rice-coded indices
            // sends 102× fewer bytes on 2 replicas, PowerSGD rank 4 47×.
            let cases: [(String, [String: Any], Double, Double)] = [
                ("fp16", ["codec": "fp16"], 0.01, 1.9),
                ("bf16", ["codec": "bf16"], 0.01, 1.9),
                ("int8", ["codec": "int8"], 0.01, 3.5),
                ("topk", ["codec": "topk", "fraction": 0.01], 0.35, 90),
                ("powersgd", ["codec": "powersgd", "rank": 4], 0.08, 30),
            ]
            for (label, compression, bound, ratio) in cases {
                let run = try await train(label, compression: compression, in: directory, processes: processes)
                let difference = abs(run.tail - baseline.tail) / baseline.tail
                print("\(label): final loss (mean of the last 30 steps) \(run.tail) vs none \(baseline.tail): \(String(format: "%.2f", difference * 100)) %")
                #expect(difference <= bound, "\(label): final loss \(run.tail) vs none \(baseline.tail)")
                let line = run.status.split(separator: "\n").first { $0.contains("gradient exchange") }.map(String.init) ?? ""
                let shown = Double(line.components(separatedBy: ", ").last?.components(separatedBy: "×").first ?? "") ?? 0
                #expect(shown >= ratio, "\(label): status shows '\(line)'")
            }
        }
    }
}

/// The codec state belongs to the layers (issue 6, test 3): PowerSGD's Q and residuals are in
/// the checkpoint and come back on restore, and a worker that takes a slot in a re-plan gets
/// the stage's Q with its copy; in both cases the loss goes on as in the uninterrupted run.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct CompressionStateProcessTests {
    func job(steps: Int, checkpoint: [String: Any]? = nil) -> [String: Any] {
        var job = w1Job(stages: 1, replicas: 2, steps: steps, checkpoint: checkpoint)
        job["compression"] = ["codec": "powersgd", "rank": 4]
        return job
    }

    func losses(_ ledger: [[String: Any]]) -> [Int: Double] {
        Dictionary(ledger.compactMap { entry in (entry["step"] as? Int).flatMap { step in (entry["loss"] as? Double).map { (step, $0) } } }, uniquingKeysWith: { $1 })
    }

    @Test func codecStateSurvivesRestoreAndReplan() async throws {
        try await withProcesses("elastic-codec-state") { directory, processes in
            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", "16384"], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            // The uninterrupted run, with checkpoints at steps 30 and 60.
            try writeJSON(job(steps: 60, checkpoint: ["every": 30, "keep": 3, "directory": "ckpts"]), to: directory.appendingPathComponent("full.json"))
            let full = try await ClusterHarness.start(in: directory, processes: processes, name: "full", job: "full.json")
            let fullWorkers = try (0..<2).map { try full.join("full-w\($0)") }
            try await full.waitForFinish()
            try await waitUntil("the final checkpoint") { full.controller.stderr.contains("checkpoint of step 60 committed") }
            for worker in fullWorkers { worker.signal(SIGKILL) }
            try await full.stopController()
            let reference = losses(full.ledger())

            let inspected = try await CLI.run(["checkpoint", "inspect", "ckpts/step-00000030", "--json"], in: directory)
            #expect(inspected.stdout.contains("weight.powersgd.q") && inspected.stdout.contains("weight.residual"), "the checkpoint holds the codec state")

            // Restore at step 30: Q and the writer's residuals come back.
            try writeJSON(job(steps: 60), to: directory.appendingPathComponent("restored.json"))
            let restored = try await ClusterHarness.start(in: directory, processes: processes, name: "restored", job: "restored.json", arguments: ["--restore", "ckpts/step-00000030"])
            let restoredWorkers = try (0..<2).map { try restored.join("restored-w\($0)") }
            try await restored.waitForFinish()
            for worker in restoredWorkers {
                #expect(!worker.stderr.contains("starting it afresh"), "\(worker.name) dropped the codec state: \(worker.stderr)")
                worker.signal(SIGKILL)
            }
            try await restored.stopController()
            let after = losses(restored.ledger())
            #expect(Set(after.keys) == Set(30..<60))
            for step in 30..<60 {
                guard let value = after[step], let expected = reference[step] else { continue }
                #expect(abs(value - expected) <= 5e-3 * expected, "restored step \(step): \(value) vs \(expected)")
            }

            // A re-plan: a slot worker dies, the spare copies the stage (with Q) and takes over.
            try writeJSON(job(steps: 60), to: directory.appendingPathComponent("replan.json"))
            let replan = try await ClusterHarness.start(in: directory, processes: processes, name: "replan", job: "replan.json")
            var workers = try (0..<2).map { try replan.join("replan-w\($0)") }
            try await replan.waitForSteps(5)
            workers.append(try replan.join("replan-w2"))
            try await replan.waitForSteps(20)
            let plan = try #require(try await replan.status().training?.plan)
            let victim = try #require(workers.first { plan.contains($0.name) })
            victim.signal(SIGKILL)
            try await replan.waitForFinish()
            let spare = workers[2]
            #expect(spare.stderr.contains("copied layers") && !spare.stderr.contains("starting it afresh"), "the spare: \(spare.stderr)")
            let replanned = losses(replan.ledger())
            #expect(Set(replanned.keys) == Set(0..<60))
            for step in 0..<60 {
                guard let value = replanned[step], let expected = reference[step] else { continue }
                #expect(abs(value - expected) <= 5e-3 * expected, "re-planned step \(step): \(value) vs \(expected)")
            }
        }
    }
}
