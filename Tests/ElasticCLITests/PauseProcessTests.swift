import ElasticServices
import Foundation
import Testing

/// Pauses on real processes (SIGSTOP … SIGCONT, as a VM stall or a debugger does), W1 on 2 stages
/// × 2 replicas: a controller that pauses for longer than the dead timeout keeps its healthy
/// cluster (no death, no new incarnation, no rollback); a worker that pauses that long is fenced
/// and, once it runs again, learns so from the controller at once and joins again.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct PauseProcessTests {
    static let samples = 4096
    static let steps = 120

    /// The first ledger entry committed after `date` (ledger times are ISO 8601 wall clock).
    private static func firstCommit(after date: Date, in ledger: [[String: Any]]) -> (step: Int, at: Date)? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for entry in ledger {
            guard let step = entry["step"] as? Int, let text = entry["time"] as? String, let at = formatter.date(from: text) else { continue }
            if at > date { return (step, at) }
        }
        return nil
    }

    private static func start(in directory: URL, processes: ProcessGroup) async throws -> (ClusterHarness, [String: SpawnedProcess]) {
        let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(samples)], in: directory)
        try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
        try writeJSON(w1Job(stages: 2, replicas: 2, steps: steps, checkpoint: ["every": 20, "directory": "checkpoints"]),
                      to: directory.appendingPathComponent("job.json"))
        let cluster = try await ClusterHarness.start(in: directory, processes: processes)
        var workers: [String: SpawnedProcess] = [:]
        for name in ["w1", "w2", "w3", "w4"] { workers[name] = try cluster.join(name) }
        return (cluster, workers)
    }

    @Test func aControllerPausedPastTheDeadTimeoutKeepsItsCluster() async throws {
        try await withProcesses("elastic-controller-pause") { directory, processes in
            let (cluster, workers) = try await Self.start(in: directory, processes: processes)
            let pids = workers.mapValues(\.pid)
            try await cluster.waitForSteps(40)
            let generation = try await cluster.status().generation

            // 6 s stopped: three times the dead timeout (2 s).
            cluster.controller.signal(SIGSTOP)
            try await Task.sleep(for: .seconds(6))
            let before = cluster.ledger().count
            let resumedAt = Date()
            cluster.controller.signal(SIGCONT)
            try await waitUntil("a step committed after SIGCONT", deadline: .seconds(60)) { cluster.ledger().count > before }
            try await cluster.waitForFinish()

            let log = cluster.controller.stderr
            #expect(log.contains("controller paused for"), "controller log: \(log)")
            #expect(!log.contains("declared dead"), "a member was declared dead: \(log)")
            let events = (try? String(contentsOf: directory.appendingPathComponent("controller/events.jsonl"), encoding: .utf8)) ?? ""
            #expect(events.contains(#""event":"paused""#), "events.jsonl: \(events)")
            #expect(!events.contains(#""event":"died""#), "events.jsonl: \(events)")
            for (name, worker) in workers {
                #expect(worker.process.isRunning && worker.pid == pids[name], "\(name) restarted")
                let whole = worker.stderr
                #expect(whole.components(separatedBy: "joined as member").count == 2, "\(name) joined again: \(whole)")
                #expect(!whole.contains("fenced"), "\(name) was fenced: \(whole)")
                #expect(!whole.contains("copied layers") && !whole.contains("restored layers"), "\(name) needed a copy: \(whole)")
            }
            let ledger = cluster.ledger()
            #expect(!ledger.contains { $0["rollbackTo"] != nil }, "a rollback: \(ledger.filter { $0["rollbackTo"] != nil })")
            #expect(ledger.compactMap { $0["step"] as? Int } == Array(0..<Self.steps))
            #expect(ledger.allSatisfy { $0["replicasAgree"] as? Bool == true }, "replicas disagreed")
            // The pause changed no generation: every step from the pause to the end committed
            // in the generation that was current before it.
            let after = Set(ledger.dropFirst(before).compactMap { ($0["generation"] as? Int).map(UInt64.init) })
            #expect(after == [generation], "generations after the pause: \(after), before it \(generation)")
            if let next = Self.firstCommit(after: resumedAt, in: ledger) {
                print("controller SIGSTOP 6 s at step \(before): SIGCONT → step \(next.step) committed in \(Int(next.at.timeIntervalSince(resumedAt) * 1000)) ms")
            }
        }
    }

    @Test func aWorkerPausedPastTheDeadTimeoutIsFencedAndJoinsAgainAtOnce() async throws {
        try await withProcesses("elastic-worker-pause") { directory, processes in
            let (cluster, workers) = try await Self.start(in: directory, processes: processes)
            try await cluster.waitForSteps(30)
            let victim = workers["w4"]!
            victim.signal(SIGSTOP)
            try await waitUntil("w4 to be declared dead", deadline: .seconds(30)) { cluster.controller.stderr.contains("w4 incarnation") && cluster.controller.stderr.contains("declared dead") }
            // Training goes on without it (the stage keeps a replica).
            let during = cluster.ledger().count
            try await waitUntil("steps without w4", deadline: .seconds(60)) { cluster.ledger().count > during + 3 }
            let resumedAt = ContinuousClock.now
            victim.signal(SIGCONT)
            try await waitUntil("w4 to join again", deadline: .seconds(30)) { victim.stderr.components(separatedBy: "joined as member").count == 3 }
            let took = ContinuousClock.now - resumedAt
            let log = victim.stderr
            #expect(log.contains("fenced by the controller"), "w4's log: \(log)")
            #expect(victim.process.isRunning, "w4 exited: \(log)")
            print("worker SIGSTOP past the dead timeout: SIGCONT → joined again in \(took.components.seconds * 1000 + took.components.attoseconds / 1_000_000_000_000_000) ms")
            try await cluster.waitForFinish()
            let steps = cluster.ledger().compactMap { $0["step"] as? Int }
            #expect(steps == Array(0..<Self.steps), "committed steps: \(steps)")
        }
    }
}
