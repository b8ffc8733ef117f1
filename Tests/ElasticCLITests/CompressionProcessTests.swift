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
            // (rank 8: 1.4 %), top-k 1 % about 27 % above it (with momentum correction).
            let cases: [(String, [String: Any], Double, Double)] = [
                ("fp16", ["codec": "fp16"], 0.01, 1.9),
                ("bf16", ["codec": "bf16"], 0.01, 1.9),
                ("int8", ["codec": "int8"], 0.01, 3.5),
                ("topk", ["codec": "topk", "fraction": 0.01], 0.35, 50),
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
