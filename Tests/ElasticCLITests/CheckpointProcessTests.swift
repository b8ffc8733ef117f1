import ElasticCore
import ElasticTestSupport
import Foundation
import Testing

/// Checkpoints on real processes (issue 5): written by the stages' first replicas while
/// training runs, restored onto another plan, corrupted, and written by a process killed at
/// random moments.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct CheckpointProcessTests {
    static let samples = 4096

    /// Trains `job` (written to `<label>.json`) on `workers` new workers under a controller of
    /// its own, waits for the end and stops everyone; returns the ledger and the controller log.
    func train(_ label: String, _ job: [String: Any], workers: Int, restore: String? = nil, in directory: URL, processes: ProcessGroup) async throws -> (ledger: [[String: Any]], log: String) {
        try writeJSON(job, to: directory.appendingPathComponent("\(label).json"))
        let cluster = try await ClusterHarness.start(in: directory, processes: processes, name: label, job: "\(label).json", arguments: restore.map { ["--restore", $0] } ?? [])
        let spawned = try (0..<workers).map { try cluster.join("\(label)-w\($0)") }
        try await cluster.waitForFinish(deadline: .seconds(120))
        // The last checkpoint is committed after the last step: wait for it before stopping.
        if job["checkpoint"] != nil {
            try await waitUntil("the final checkpoint of \(label)", deadline: .seconds(30)) {
                cluster.controller.stderr.contains("checkpoint of step \(job["steps"] as? Int ?? 0) committed")
            }
        }
        for worker in spawned { worker.signal(SIGKILL) }
        try await cluster.stopController()
        return (cluster.ledger(), cluster.controller.stderr)
    }

    func losses(_ ledger: [[String: Any]]) -> [Int: Double] {
        Dictionary(ledger.compactMap { entry in (entry["step"] as? Int).flatMap { step in (entry["loss"] as? Double).map { (step, $0) } } }, uniquingKeysWith: { $1 })
    }

    func expectClose(_ restored: [Int: Double], _ reference: [Int: Double], steps: Range<Int>, tolerance: Double, _ label: String) {
        #expect(Set(restored.keys) == Set(steps), "\(label): steps \(restored.keys.sorted())")
        for step in steps {
            guard let value = restored[step], let expected = reference[step] else { continue }
            #expect(abs(value - expected) <= tolerance * abs(expected), "\(label) step \(step): \(value) vs \(expected)")
        }
    }

    @Test func restoreContinuesOnTheSameOrAnotherPlan() async throws {
        try await withProcesses("elastic-checkpoint-restore") { directory, processes in
            let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
            try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
            let every20: [String: Any] = ["every": 20, "keep": 5, "directory": "ckpt-2x2"]

            // The uninterrupted run, 2×2, checkpoints at steps 20 and 40.
            let (full, _) = try await train("full", w1Job(stages: 2, replicas: 2, steps: 40, checkpoint: every20), workers: 4, in: directory, processes: processes)
            let reference = losses(full)
            try #require(reference.count == 40)
            let listed = try await CLI.run(["checkpoint", "list", "ckpt-2x2", "--verify"], in: directory)
            #expect(listed.status == 0 && listed.stdout.contains("20 ") && listed.stdout.contains("← latest"), "list: \(listed.stdout) \(listed.stderr)")

            // Same plan, from step 20: the same losses (the state is bit-exact).
            let (same, sameLog) = try await train("same", w1Job(stages: 2, replicas: 2, steps: 40), workers: 4, restore: "ckpt-2x2/step-00000020", in: directory, processes: processes)
            #expect(sameLog.contains("resumes from checkpoint") && sameLog.contains("step-00000020"))
            expectClose(losses(same), reference, steps: 20..<40, tolerance: 1e-6, "2×2 → 2×2")

            // Other plans: 1×1 and 4×1 (written under 2×2); the 1×1 run writes its own
            // checkpoints, restored under 2×2 (the reverse).
            let every10: [String: Any] = ["every": 10, "keep": 5, "directory": "ckpt-1x1"]
            let (single, _) = try await train("single", w1Job(stages: 1, replicas: 1, steps: 40, checkpoint: every10), workers: 1, restore: "ckpt-2x2/step-00000020", in: directory, processes: processes)
            expectClose(losses(single), reference, steps: 20..<40, tolerance: 1e-3, "2×2 → 1×1")
            let (deep, _) = try await train("deep", w1Job(stages: 4, replicas: 1, steps: 40), workers: 4, restore: "ckpt-2x2/step-00000020", in: directory, processes: processes)
            expectClose(losses(deep), reference, steps: 20..<40, tolerance: 1e-3, "2×2 → 4×1")
            // (The newest one before the end: one that came due during a write may be skipped.)
            let written = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("ckpt-1x1").path).filter { $0.hasPrefix("step-") }.sorted()
            let middle = try #require(written.last { $0 != "step-00000040" }, "1×1 checkpoints: \(written)")
            let (back, _) = try await train("back", w1Job(stages: 2, replicas: 2, steps: 40), workers: 4, restore: "ckpt-1x1/\(middle)", in: directory, processes: processes)
            expectClose(losses(back), reference, steps: (Int(middle.dropFirst(5)) ?? 0)..<40, tolerance: 1e-3, "1×1 → 2×2")

            // Exported weights are readable by numpy without elastic, and equal the checkpoint's.
            let exported = try await CLI.run(["checkpoint", "export", "ckpt-2x2/latest", "--npz", "w1.npz"], in: directory)
            #expect(exported.status == 0, "export: \(exported.stderr)")
            let python = Process()
            python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            python.arguments = ["python3", "-c", "import numpy; a = numpy.load('w1.npz'); print(a['layer0.weight'].shape, a['layer4.bias'].shape, int(a['step']))"]
            python.currentDirectoryURL = directory
            let pipe = Pipe()
            python.standardOutput = pipe
            try python.run()
            let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            python.waitUntilExit()
            #expect(printed.contains("(256, 512) (10,) 40"), "numpy read: \(printed)")
        }
    }

    /// One checkpoint root written every 10 steps of 30 (1×1); returns the step directories'
    /// names, oldest first (a checkpoint due while the previous one is being written is
    /// skipped, so under load there may be fewer than three; the last, step 30, is never lost).
    func writeThree(in directory: URL, processes: ProcessGroup) async throws -> [String] {
        let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", String(Self.samples)], in: directory)
        try #require(generated.status == 0, "data generate failed: \(generated.stderr)")
        _ = try await train("writer", w1Job(stages: 1, replicas: 1, steps: 30, checkpoint: ["every": 10, "keep": 5, "directory": "ckpts"]), workers: 1, in: directory, processes: processes)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("ckpts").path).filter { $0.hasPrefix("step-") }.sorted()
        try #require(names.count >= 2 && names.last == "step-00000030", "checkpoints written: \(names)")
        return names
    }

    /// A flipped byte, a truncated blob, a deleted blob and a damaged manifest are each found by
    /// `verify` (naming the file and the check), and restore falls back to the previous valid one.
    @Test func corruptionIsDetectedAndRestoreFallsBack() async throws {
        try await withProcesses("elastic-checkpoint-corrupt") { directory, processes in
            let names = try await writeThree(in: directory, processes: processes)
            let (newest, previous) = (names[names.count - 1], names[names.count - 2])
            let previousStep = Int(previous.dropFirst(5)) ?? 0
            let root = directory.appendingPathComponent("ckpts")
            let damages: [(String, String, (URL) throws -> Void)] = [
                ("flipped byte", "storedChecksum", { step in
                    let blob = step.appendingPathComponent("layer-0003.blob")
                    var bytes = try [UInt8](Data(contentsOf: blob))
                    bytes[bytes.count / 2] ^= 0x10
                    try Data(bytes).write(to: blob)
                }),
                ("truncated blob", "blobSize", { step in
                    let blob = step.appendingPathComponent("layer-0001.blob")
                    let bytes = try Data(contentsOf: blob)
                    try bytes.prefix(bytes.count - 100).write(to: blob)
                }),
                ("deleted blob", "blobMissing", { step in try FileManager.default.removeItem(at: step.appendingPathComponent("layer-0000.blob")) }),
                ("damaged manifest", "manifest", { step in
                    let manifest = step.appendingPathComponent("manifest.json")
                    var text = try String(contentsOf: manifest, encoding: .utf8)
                    text = String(text.prefix(text.count / 2))
                    try text.write(to: manifest, atomically: false, encoding: .utf8)
                }),
            ]
            for (index, (label, check, damage)) in damages.enumerated() {
                let copy = directory.appendingPathComponent("damaged-\(index)")
                try FileManager.default.copyItem(at: root, to: copy)
                try damage(copy.appendingPathComponent(newest))
                let verified = try await CLI.run(["checkpoint", "verify", "damaged-\(index)/\(newest)"], in: directory)
                #expect(verified.status == 2, "\(label): verify exited \(verified.status): \(verified.stdout)")
                #expect(verified.stdout.contains("INVALID") && verified.stdout.lowercased().contains(check.lowercased()), "\(label): \(verified.stdout)")
                let older = try await CLI.run(["checkpoint", "verify", "damaged-\(index)/\(previous)"], in: directory)
                #expect(older.status == 0, "\(label): \(previous) should verify: \(older.stdout)")
            }
            // Restore from the damaged `latest` falls back to step 20 and says why.
            let (resumed, log) = try await train("resumed", w1Job(stages: 1, replicas: 1, steps: 35), workers: 1, restore: "damaged-0/\(newest)", in: directory, processes: processes)
            #expect(log.contains("\(newest) fails verification, skipped") && log.contains("layer-0003.blob"), "log: \(log)")
            #expect(log.contains("resumes from checkpoint") && log.contains("damaged-0/\(previous)"))
            #expect(resumed.compactMap { $0["step"] as? Int } == Array(previousStep..<35))
            // Retention keeps the newest 5 (all of those written), and list shows each.
            let listed = try await CLI.run(["checkpoint", "list", "ckpts"], in: directory)
            #expect(listed.stdout.split(separator: "\n").count == names.count + 1, "list: \(listed.stdout)")
        }
    }

    /// SIGKILL of a checkpoint writer (`elastic checkpoint copy`, the same write-then-commit
    /// path as training) at seeded random moments: `latest` always points to a checkpoint
    /// that verifies.
    @Test func aWriterKilledAtAnyMomentNeverLeavesABadLatest() async throws {
        try await withProcesses("elastic-checkpoint-crash") { directory, processes in
            let names = try await writeThree(in: directory, processes: processes)
            let (first, second) = (names[0], names[1])
            let seed = TestSeed.make("checkpoint writer crash")
            var rng = SplitMix64(seed: seed)
            var committed = 0
            var midWrite = 0
            for trial in 0..<20 {
                let destination = "dest-\(trial)"
                let started = ContinuousClock.now
                let seeded = try await CLI.run(["checkpoint", "copy", "ckpts/\(first)", destination, "--level", "3"], in: directory)
                try #require(seeded.status == 0, "seed \(seed) trial \(trial): \(seeded.stderr)")
                // A whole copy takes about as long as this one did: kill somewhere inside it.
                let window = max(20, Int((ContinuousClock.now - started).milliseconds))
                let writer = try processes.spawn(name: "copy-\(trial)", ["checkpoint", "copy", "ckpts/\(second)", destination, "--level", "3"])
                try await Task.sleep(for: .milliseconds(Int(rng.next() % UInt64(window))))
                writer.signal(SIGKILL)
                let status = try await writer.waitForExit(deadline: .seconds(30))
                if status == 0 { committed += 1 }
                if FileManager.default.fileExists(atPath: directory.appendingPathComponent("\(destination)/.incoming-\(second.dropFirst(5))").path) { midWrite += 1 }
                let verified = try await CLI.run(["checkpoint", "verify", destination], in: directory)
                #expect(verified.status == 0, "seed \(seed) trial \(trial): latest does not verify: \(verified.stdout)")
                let latest = try String(contentsOf: directory.appendingPathComponent("\(destination)/latest"), encoding: .utf8)
                #expect([first, second].contains(latest.trimmingCharacters(in: .whitespacesAndNewlines)), "seed \(seed) trial \(trial): latest is \(latest)")
            }
            print("seed \(seed): of 20 killed writers, \(midWrite) died mid-write (an .incoming directory left) and \(committed) had already committed")
        }
    }
}
