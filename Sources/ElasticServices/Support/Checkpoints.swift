import ElasticStorage
import Foundation
import Logging

/// What `elastic checkpoint …` does, kept out of the CLI: listing, verifying, showing and
/// exporting checkpoints, and copying one into another root (re-compressed).
public enum Checkpoints {
    /// A checkpoint argument: a step directory (`…/step-00000120`), `ROOT/latest`, or a root
    /// (meaning its `latest`).
    public static func resolve(_ argument: String) throws -> String {
        var url = URL(fileURLWithPath: argument).standardizedFileURL
        if url.lastPathComponent == "latest" {
            url = url.deletingLastPathComponent()
        } else if CheckpointLayout.step(fromDirectoryName: url.lastPathComponent) != nil {
            return url.path
        }
        let store = CheckpointStore(root: url.path)
        guard let latest = store.readLatest(), CheckpointLayout.step(fromDirectoryName: latest) != nil else {
            throw ElasticError("\(argument) is neither a checkpoint (step-NNNNNNNN) nor a checkpoint root with a 'latest' pointer; 'elastic checkpoint list DIR' shows what is there")
        }
        return url.appendingPathComponent(latest).path
    }

    /// One row of `elastic checkpoint list --json` (the field names are a stable interface).
    public struct ListEntry: Codable, Sendable, Equatable {
        public var step: Int
        public var path: String
        /// ISO 8601; nil when the manifest is unreadable.
        public var writtenAt: String?
        public var generation: UInt64?
        public var layers: Int
        public var rawBytes: Int
        public var storedBytes: Int
        public var ratio: Double
        public var valid: Bool
        /// "structure" (the manifest and blob sizes) or "full" (every checksum, with --verify).
        public var checked: String
        public var problem: String?
        public var latest: Bool
    }

    /// `elastic checkpoint list ROOT`: one entry per committed checkpoint, oldest first;
    /// `verifyAll` checks every checksum of each (with progress per checkpoint).
    public static func list(root: String, verifyAll: Bool, progress: ProgressReporter? = nil) throws -> [ListEntry] {
        let store = CheckpointStore(root: root)
        var summaries = try store.list()
        if verifyAll {
            for index in summaries.indices {
                progress?.update("verifying", completed: index, total: summaries.count, unit: .items("checkpoints"))
                let verification = CheckpointReader.verify(directory: summaries[index].path)
                summaries[index].isValid = verification.isValid
                summaries[index].problem = verification.problems.first?.description
            }
            progress?.update("verifying", completed: summaries.count, total: summaries.count, unit: .items("checkpoints"))
            progress?.finish()
        }
        let formatter = ISO8601DateFormatter()
        return summaries.map { summary in
            ListEntry(
                step: summary.step, path: summary.path,
                writtenAt: summary.createdAt.map { formatter.string(from: Date(timeIntervalSince1970: Double($0) / 1000)) },
                generation: summary.generation, layers: summary.layerCount, rawBytes: summary.rawBytes, storedBytes: summary.storedBytes,
                ratio: summary.ratio, valid: summary.isValid, checked: verifyAll ? "full" : "structure", problem: summary.problem, latest: summary.isLatest)
        }
    }

    /// The listing as a table.
    public static func listTable(_ entries: [ListEntry], root: String) -> String {
        guard !entries.isEmpty else { return "no checkpoints in \(root)" }
        var rows = [["STEP", "WRITTEN", "LAYERS", "RAW", "STORED", "RATIO", "VALID", ""]]
        for entry in entries {
            rows.append([
                String(entry.step), entry.writtenAt ?? "?", String(entry.layers), bytes(entry.rawBytes), bytes(entry.storedBytes),
                entry.storedBytes > 0 ? String(format: "%.3f", entry.ratio) : "-",
                entry.valid ? (entry.checked == "full" ? "yes" : "yes (structure)") : "NO: \(entry.problem ?? "?")",
                entry.latest ? "← latest" : "",
            ])
        }
        return formatTable(rows).joined(separator: "\n")
    }

    /// `elastic checkpoint verify DIR --json` (the field names are a stable interface).
    public struct VerifyReport: Codable, Sendable, Equatable {
        public struct Problem: Codable, Sendable, Equatable {
            public var file: String?
            public var tensor: String?
            public var check: String
            public var detail: String
        }

        public var path: String
        public var valid: Bool
        public var step: Int?
        public var blobs: Int
        public var tensors: Int
        public var bytesRead: Int
        public var problems: [Problem]
    }

    /// `elastic checkpoint verify DIR`: every check, with progress per blob.
    public static func verifyReport(_ directory: String, progress: ProgressReporter? = nil) -> VerifyReport {
        let blobs = (try? CheckpointReader.readManifest(directory: directory))?.blobs.count ?? 0
        progress?.update("verifying", completed: 0, total: blobs, unit: .items("blobs"))
        let verification = CheckpointReader.verify(directory: directory, progress: progress.map { reporter in
            { reporter.update("verifying", completed: $0.blobs, total: $0.totalBlobs, unit: .items("blobs")) }
        })
        progress?.finish()
        let manifest = verification.manifest
        return VerifyReport(
            path: directory, valid: verification.isValid, step: manifest?.step, blobs: manifest?.blobs.count ?? 0,
            tensors: manifest?.blobs.reduce(0) { $0 + $1.allTensors.count } ?? 0, bytesRead: verification.bytesRead,
            problems: verification.problems.map { VerifyReport.Problem(file: $0.file, tensor: $0.tensor, check: "\($0.check)", detail: $0.detail) })
    }

    /// The verification as text.
    public static func verifyText(_ report: VerifyReport) -> String {
        guard report.valid else {
            let lines = report.problems.map { "  \($0.file ?? "-")\($0.tensor.map { " " + $0 } ?? ""): \($0.check) — \($0.detail)" }
            return "\(report.path): INVALID (\(report.problems.count) problem(s))\n" + lines.joined(separator: "\n")
        }
        return "\(report.path): valid — step \(report.step ?? 0), \(report.blobs) blobs, \(report.tensors) tensors, \(bytes(report.bytesRead)) read; every size, stored checksum, decompression, raw checksum and shape checked"
    }

    /// Text and validity, as `elastic checkpoint verify` prints them.
    public static func verify(_ directory: String) -> (text: String, valid: Bool) {
        let report = verifyReport(directory)
        return (verifyText(report), report.valid)
    }

    /// `elastic checkpoint inspect DIR`: the manifest as a table or as JSON.
    public static func inspect(_ directory: String, json: Bool) throws -> String {
        let manifest = try CheckpointReader.readManifest(directory: directory)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try encoder.encode(manifest), as: UTF8.self)
        }
        let formatter = ISO8601DateFormatter()
        var lines = [
            "checkpoint   \(directory)",
            "job          \(manifest.jobName) (spec hash \(manifest.jobSpecHash))",
            "step         \(manifest.step) (epoch \(manifest.dataCursor.epoch), offset \(manifest.dataCursor.offset), \(manifest.dataCursor.samplesConsumed) samples consumed)",
            "generation   \(manifest.generation)",
            "written      \(formatter.string(from: Date(timeIntervalSince1970: Double(manifest.createdAt) / 1000)))",
            "plan         " + manifest.plan.stages.map { "[layers \($0.firstLayer)-\($0.lastLayer): \($0.members.joined(separator: " "))]" }.joined(separator: " "),
            "zstd         level \(manifest.zstd.level), libzstd \(manifest.zstd.libraryVersion)",
            "size         \(bytes(manifest.rawBytes)) raw, \(bytes(manifest.storedBytes)) stored (ratio \(String(format: "%.3f", manifest.storedBytes > 0 ? Double(manifest.rawBytes) / Double(manifest.storedBytes) : 0)))",
            "",
        ]
        var rows = [["LAYER", "FILE", "TENSOR", "SHAPE", "TRANSFORM", "CODEC", "RAW", "STORED", "RATIO"]]
        for blob in manifest.blobs {
            for tensor in blob.allTensors {
                rows.append([
                    String(blob.layer), blob.file, tensor.name, tensor.shape.map(String.init).joined(separator: "×"),
                    tensor.transform.rawValue, tensor.codec.rawValue, bytes(tensor.rawBytes), bytes(tensor.storedBytes),
                    tensor.storedBytes > 0 ? String(format: "%.3f", Double(tensor.rawBytes) / Double(tensor.storedBytes)) : "-",
                ])
            }
        }
        lines.append(contentsOf: formatTable(rows))
        return lines.joined(separator: "\n")
    }

    /// `elastic checkpoint export DIR --npz FILE`: every tensor, verified, as a NumPy archive.
    public static func exportNPZ(_ directory: String, to file: String, progress: ProgressReporter? = nil) throws -> String {
        let total = totalStoredBytes(directory)
        progress?.update("reading and verifying", completed: 0, total: total, unit: .bytes)
        let loaded = try CheckpointReader.load(directory: directory, progress: progress.map { reporter in
            { reporter.update("reading and verifying", completed: $0.bytes, total: total, unit: .bytes) }
        })
        progress?.step("writing \(file)")
        try CheckpointExport.writeNPZ(loaded, to: file)
        let arrays = try CheckpointExport.arrays(of: loaded)
        progress?.finish()
        return "wrote \(arrays.count) arrays of step \(loaded.manifest.step) to \(file) (numpy.load reads it)"
    }

    /// `elastic checkpoint copy DIR ROOT`: verifies the checkpoint and writes it into another
    /// root with the same two-phase protocol as training (blobs, part record, manifest last,
    /// atomic rename, `latest`), at another zstd level if asked.
    public static func copy(_ directory: String, to root: String, options: CheckpointWriteOptions, progress: ProgressReporter? = nil) throws -> CheckpointSummary {
        let total = totalStoredBytes(directory)
        progress?.update("reading and verifying", completed: 0, total: total, unit: .bytes)
        let loaded = try CheckpointReader.load(directory: directory, progress: progress.map { reporter in
            { reporter.update("reading and verifying", completed: $0.bytes, total: total, unit: .bytes) }
        })
        let store = CheckpointStore(root: root)
        let step = loaded.manifest.step
        _ = try store.writeLayers(step: step, part: "copy", layers: loaded.layers, options: options, progress: progress.map { reporter in
            { reporter.update("writing step \(step) into \(root)", completed: $0.blobs, total: $0.totalBlobs, unit: .items("blobs")) }
        })
        progress?.step("committing")
        let summary = try store.commit(step: step, header: loaded.manifest.header, layerCount: loaded.manifest.layerCount)
        progress?.finish()
        return summary
    }

    /// The blob bytes a checkpoint's manifest records (0 when it cannot be read), as the total
    /// of a read's progress.
    static func totalStoredBytes(_ directory: String) -> Int {
        ((try? CheckpointReader.readManifest(directory: directory))?.blobs ?? []).reduce(0) { $0 + $1.bytes }
    }

    /// Progress lines (in the log) for a worker's restore of `layers` from `directory`, when
    /// their blobs are larger than `threshold` bytes; nil otherwise (a small restore logs only
    /// its result).
    public static func restoreProgress(_ directory: String, layers: Range<Int>, logger: Logger, threshold: Int = 4 << 20) -> CheckpointProgressHandler? {
        let blobs = ((try? CheckpointReader.readManifest(directory: directory))?.blobs ?? []).filter { layers.contains($0.layer) }
        let total = blobs.reduce(0) { $0 + $1.bytes }
        guard total > threshold else { return nil }
        let reporter = ProgressReporter("restoring layers \(layers.lowerBound)-\(layers.upperBound - 1)", output: .lines { logger.info("\($0)") })
        return { reporter.update("reading", completed: $0.bytes, total: total, unit: .bytes) }
    }

    static func bytes(_ count: Int) -> String { byteCount(UInt64(max(0, count))) }
}
