/// What `elastic data inspect` shows: the manifest's facts, per-class counts, and every shard
/// with its range and the result of its checks. Codable (for `--json`) and printable as a
/// table (`table`). Unlike `Dataset.open`, inspection does not stop at the first bad shard: it
/// reports every one.
public struct DatasetReport: Sendable, Codable, Equatable {
    public struct Shard: Sendable, Codable, Equatable {
        public enum Status: String, Sendable, Codable {
            /// Header and payload verified.
            case ok
            /// Header verified; the payload was not read (`verify: false`).
            case headerOK
            /// A check failed: see `errorCode` and `problem`.
            case failed
        }

        public var file: String
        public var firstSample: Int
        /// One past the last sample.
        public var endSample: Int
        public var samples: Int
        public var bytes: Int
        /// CRC32C of the payload as the manifest lists it.
        public var payloadCRC32C: String
        public var status: Status
        public var errorCode: String?
        public var problem: String?
    }

    public var directory: String
    public var name: String
    public var origin: String
    public var samples: Int
    public var features: Int
    public var featureType: String
    public var classes: Int
    public var labelLayout: String
    public var fingerprint: String
    public var checksum: String
    /// Whether payloads were read and their checksums verified.
    public var verified: Bool
    /// Samples per class: counted from the labels when every shard verified, else as the
    /// manifest lists them (see `classCountsSource`), or nil.
    public var classCounts: [Int]?
    /// "labels" or "manifest".
    public var classCountsSource: String?
    public var shards: [Shard]
    /// Every failed check, one sentence each.
    public var problems: [String]

    /// True when every check passed.
    public var isValid: Bool { problems.isEmpty }

    /// A plain-text rendering for a terminal.
    public var table: String {
        var lines: [String] = []
        func row(_ cells: [String], _ widths: [Int]) -> String {
            zip(cells, widths).map { cell, width in cell.count >= width ? cell : cell + String(repeating: " ", count: width - cell.count) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }
        let facts: [(String, String)] = [
            ("data set", "\(name) (\(directory))"),
            ("origin", origin),
            ("samples", "\(samples)"),
            ("features", "\(features) × \(featureType)"),
            ("labels", "\(labelLayout), \(classes) classes"),
            ("fingerprint", fingerprint),
            ("checksums", verified ? "\(checksum), verified" : "\(checksum), headers only (payloads not read)"),
            ("status", isValid ? "ok" : "\(problems.count) problem\(problems.count == 1 ? "" : "s")"),
        ]
        for (key, value) in facts { lines.append(row([key, value], [12, 0])) }
        if let classCounts {
            lines.append("")
            lines.append(row(["class", "samples", "share"], [6, 10, 6]) + (classCountsSource == "manifest" ? "  (from the manifest)" : ""))
            for (c, count) in classCounts.enumerated() {
                let share = samples > 0 ? Double(count) * 100 / Double(samples) : 0
                lines.append(row(["\(c)", "\(count)", formatPercent(share)], [6, 10, 6]))
            }
        }
        lines.append("")
        let widths = [max(5, shards.map(\.file.count).max() ?? 0), 22, 12, 8, 9]
        lines.append(row(["shard", "samples", "bytes", "crc32c", "status"], widths))
        for shard in shards {
            lines.append(row([shard.file, "\(shard.firstSample)..<\(shard.endSample)", "\(shard.bytes)", shard.payloadCRC32C, shard.status.rawValue], widths))
        }
        if !problems.isEmpty {
            lines.append("")
            lines.append("problems:")
            for problem in problems { lines.append("  " + problem) }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func formatPercent(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)%"
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}

extension Dataset {
    /// Inspects the data set in `directory`: reads the manifest (throws if it is missing or
    /// invalid: there is then nothing to report), then checks every shard's header and, with
    /// `verify`, its payload (checksum, finite features, labels) and counts the classes.
    /// Problems with shards are reported in the result, not thrown.
    public static func inspect(
        _ directory: String,
        verify: Bool = true,
        limits: DatasetLimits = .init(),
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> DatasetReport {
        let manifest = try readManifest(directory)
        var problems: [String] = []
        var shards: [DatasetReport.Shard] = []
        var counts = [Int](repeating: 0, count: manifest.classes)
        var allVerified = true
        var done = 0
        progress(DatasetProgress(phase: .verifying, completed: 0, total: manifest.samples, unit: .samples))
        for (k, entry) in manifest.shards.enumerated() {
            var report = DatasetReport.Shard(
                file: entry.file, firstSample: entry.firstSample, endSample: entry.firstSample + entry.samples,
                samples: entry.samples, bytes: entry.bytes, payloadCRC32C: entry.payloadCRC32C, status: .ok)
            do {
                if verify {
                    let shard = try readShard(directory: directory, manifest: manifest, shard: k, limits: limits)
                    for label in shard.labels { counts[Int(label)] += 1 }
                } else {
                    _ = try readHeader(directory: directory, manifest: manifest, shard: k, limits: limits)
                    report.status = .headerOK
                }
            } catch {
                report.status = .failed
                report.errorCode = error.code.name
                report.problem = error.message
                problems.append(error.message)
                allVerified = false
            }
            shards.append(report)
            done += entry.samples
            progress(DatasetProgress(phase: .verifying, completed: done, total: manifest.samples, unit: .samples))
        }
        var classCounts = manifest.classCounts
        var source: String? = classCounts == nil ? nil : "manifest"
        if verify && allVerified {
            if let listed = manifest.classCounts, listed != counts {
                problems.append("\(joinPath(directory, DatasetManifest.fileName)) \(classCountDifference(listed: listed, actual: counts))")
            }
            classCounts = counts
            source = "labels"
        }
        return DatasetReport(
            directory: directory, name: manifest.name, origin: manifest.origin, samples: manifest.samples,
            features: manifest.features, featureType: manifest.featureType, classes: manifest.classes,
            labelLayout: LabelLayout.classIndexName, fingerprint: manifest.fingerprint, checksum: manifest.checksum,
            verified: verify, classCounts: classCounts, classCountsSource: source, shards: shards, problems: problems)
    }
}
