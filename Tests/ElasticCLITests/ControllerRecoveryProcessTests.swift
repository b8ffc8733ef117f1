import ElasticServices
import Foundation
import Testing

/// Controller durability on real processes (issue 7, test 2): W1 on 2 stages × 2 replicas with
/// checkpoints; the controller is SIGKILLed mid-training, twice, and started again with the
/// same command. Every worker keeps running (same pid), resumes its incarnation and keeps its
/// layers (no state copy, no checkpoint read), training continues from the last committed step,
/// and the whole run keeps the invariants: every step committed exactly once, in order, with its
/// data slice; replicas agree; the loss curve follows the numpy reference.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct ControllerRecoveryProcessTests {
    static let samples = 4096
    static let steps = 160

    @Test func killNineTheControllerAndRestartIt() async throws {
        try await withProcesses("elastic-recovery") { directory, processes in
            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            let reference = try referenceLosses(samples: Self.samples, steps: Self.steps)
            try writeJSON(w1Job(stages: 2, replicas: 2, steps: Self.steps, checkpoint: ["every": 40, "directory": "checkpoints"]),
                          to: directory.appendingPathComponent("job.json"))
            let cluster = try await ClusterHarness.start(in: directory, processes: processes)
            var workers: [String: SpawnedProcess] = [:]
            for name in ["w1", "w2", "w3", "w4"] { workers[name] = try cluster.join(name) }
            let pids = workers.mapValues(\.pid)

            // The controller's arguments, with the port it got: workers dial that address.
            let arguments = ["controller", "--listen", cluster.address, "--data-dir", cluster.data, "--job", "job.json"]
            var controller = cluster.controller
            // What each worker logged before the first kill (a job grows as workers join, with
            // copies: those are not the restart's).
            var before: [String: Int] = [:]
            for (round, killAfter) in [45, 100].enumerated() {
                try await cluster.waitForSteps(killAfter)
                if round == 0 { before = workers.mapValues { $0.stderr.count } }
                controller.signal(SIGKILL)
                _ = try await controller.waitForExit(deadline: .seconds(10))
                let committed = cluster.ledger().count
                controller = try processes.spawn(name: "controller-\(round + 2)", arguments)
                let restarted = controller
                try await waitUntil("the restarted controller to resume training", deadline: .seconds(60)) {
                    if !restarted.process.isRunning { throw HarnessError("the restarted controller exited: \(restarted.stderr)") }
                    return cluster.ledger().count > committed + 5
                }
                let log = restarted.stderr
                #expect(log.contains("recovering from the journal"), "controller log: \(log)")
                // The journal may be one step ahead of ledger.jsonl: a kill between the two writes.
                #expect(log.contains("continues from the journal at step \(committed)") || log.contains("continues from the journal at step \(committed + 1)"),
                        "committed \(committed) before the kill; controller log: \(log)")
                #expect(log.contains("every member resumed"), "controller log: \(log)")
            }
            try await waitUntil("the job to finish", deadline: .seconds(240)) {
                if controller.stderr.contains("training stopped") { throw HarnessError("training stopped: \(controller.stderr)") }
                return controller.stderr.contains("finished:")
            }

            // No worker restarted, and none lost its state: each resumed its incarnation
            // after each kill, nobody copied state or read a checkpoint.
            for (name, worker) in workers {
                #expect(worker.process.isRunning && worker.pid == pids[name], "\(name) restarted")
                let whole = worker.stderr
                #expect(whole.components(separatedBy: "joined as member").count == 2, "\(name) joined more than once: \(whole)")
                let log = String(whole.dropFirst(before[name] ?? 0))
                #expect(log.components(separatedBy: "resumed as member").count >= 3, "\(name) did not resume after both kills: \(log)")
                #expect(!log.contains("dropping the state"), "\(name) dropped its state: \(log)")
                #expect(!log.contains("copied layers") && !log.contains("restored layers"), "\(name) needed a copy: \(log)")
            }
            let ledger = cluster.ledger()
            let steps = ledger.compactMap { $0["step"] as? Int }
            // Invariants 1 and 2 over the whole run: every step once, in order, its own slice.
            #expect(steps == Array(0..<Self.steps), "committed steps: \(steps)")
            for (step, entry) in ledger.enumerated() {
                #expect(entry["epoch"] as? Int == step / 16 && entry["nextSample"] as? Int == (step % 16 + 1) * 256)
            }
            // Invariant 3.
            #expect(ledger.allSatisfy { $0["replicasAgree"] as? Bool == true }, "replicas disagreed")
            // Invariant 4 (as the elasticity test checks it: float32 summation order drifts on
            // this small, overfitting data set, so the first 100 steps are compared closely).
            let losses = ledger.compactMap { $0["loss"] as? Double }
            let worst = zip(losses.prefix(100), reference).map { abs($0 - $1) / abs($1) }.max() ?? 1
            #expect(worst < 1e-3, "loss off the reference by \(worst)")
            // The checkpoints written across the restarts are complete.
            let list = try await CLI.run(["checkpoint", "list", "checkpoints", "--verify"], in: directory)
            let last = list.stdout.split(separator: "\n").first { $0.hasPrefix("\(Self.steps) ") }
            #expect(list.status == 0 && last?.contains("yes") == true, "checkpoint list: \(list.stdout) \(list.stderr)")
        }
    }

    /// A controller restarted while a worker is gone for good: after the recovery grace the
    /// missing member is declared dead and training continues on the others.
    @Test func aMemberThatDoesNotComeBackIsDeclaredDead() async throws {
        try await withProcesses("elastic-recovery-gone") { directory, processes in
            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            try writeJSON(w1Job(stages: 2, replicas: 2, steps: 60), to: directory.appendingPathComponent("job.json"))
            let cluster = try await ClusterHarness.start(in: directory, processes: processes)
            var workers: [String: SpawnedProcess] = [:]
            for name in ["w1", "w2", "w3", "w4"] { workers[name] = try cluster.join(name) }
            try await cluster.waitForSteps(15)
            cluster.controller.signal(SIGKILL)
            _ = try await cluster.controller.waitForExit(deadline: .seconds(10))
            workers["w4"]!.signal(SIGKILL)
            _ = try await workers["w4"]!.waitForExit(deadline: .seconds(10))
            let committed = cluster.ledger().count
            // Another job file while the journal's job is unfinished: refused, with what to do.
            try writeJSON(w1Job(stages: 1, replicas: 2, steps: 30), to: directory.appendingPathComponent("other.json"))
            let refused = try await CLI.run(["controller", "--listen", "127.0.0.1:0", "--data-dir", cluster.data, "--job", "other.json", "--http", "off"], in: directory)
            #expect(refused.status != 0 && refused.stderr.contains("unfinished") && refused.stderr.contains("without --job"), "\(refused.stderr)")
            let controller = try processes.spawn(name: "controller-2", [
                "controller", "--listen", cluster.address, "--data-dir", cluster.data, "--job", "job.json", "--recovery-grace", "3s",
            ])
            try await waitUntil("the job to finish without w4", deadline: .seconds(120)) {
                if !controller.process.isRunning { throw HarnessError("the restarted controller exited: \(controller.stderr)") }
                return controller.stderr.contains("finished:")
            }
            #expect(controller.stderr.contains("did not reconnect after the controller restarted"), "controller log: \(controller.stderr)")
            let steps = cluster.ledger().compactMap { $0["step"] as? Int }
            #expect(steps == Array(0..<60), "committed steps (\(committed) before the kill): \(steps)")
        }
    }
}
