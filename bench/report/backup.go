package main

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
)

// Backup is the backup-and-restore workload (bench/backup.sh): bulkhead
// backup and restore against the raw tools, on the same data, by size.
type Backup struct {
	Meta  map[string]string   `json:"meta"`
	Times []map[string]string `json:"times"`
	Sizes []BackupSize        `json:"sizes"`
	// GoalMB is the size issue #13's goals are set at, and GoalBackupS and
	// GoalRestoreS the most seconds they allow.
	GoalMB       int     `json:"goal_mb"`
	GoalBackupS  float64 `json:"goal_backup_s"`
	GoalRestoreS float64 `json:"goal_restore_s"`
}

// BackupSize sums up one size. A figure is absent when its op did not
// run or failed.
type BackupSize struct {
	MB        int      `json:"size_mb"`
	DataBytes int64    `json:"data_bytes"`
	ArchiveB  int64    `json:"archive_bytes,omitempty"`
	BackupS   *float64 `json:"backup_s,omitempty"`
	RawBackS  *float64 `json:"raw_backup_s,omitempty"` // raw-dump + raw-tar
	RestoreS  *float64 `json:"restore_s,omitempty"`
	RawRestS  *float64 `json:"raw_restore_s,omitempty"` // raw-load + raw-untar
	// The data's MB (10^6 bytes) a second, and bulkhead's time over the
	// raw tools'.
	BackupMBps     *float64 `json:"backup_mb_per_s,omitempty"`
	RawBackupMBps  *float64 `json:"raw_backup_mb_per_s,omitempty"`
	BackupRatio    *float64 `json:"backup_over_raw,omitempty"`
	RestoreMBps    *float64 `json:"restore_mb_per_s,omitempty"`
	RawRestoreMBps *float64 `json:"raw_restore_mb_per_s,omitempty"`
	RestoreRatio   *float64 `json:"restore_over_raw,omitempty"`
	// BackupMet and RestoreMet say, at the goals' size, whether the goal
	// was met.
	BackupMet  *bool `json:"backup_goal_met,omitempty"`
	RestoreMet *bool `json:"restore_goal_met,omitempty"`
}

func loadBackup(dir string, r *Results) error {
	rows, err := table(filepath.Join(dir, "backup.tsv"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	b := &r.Backup
	b.Times, b.GoalMB, b.GoalBackupS, b.GoalRestoreS = rows, 100, 10, 30
	if b.Meta, err = meta(filepath.Join(dir, "backup-meta.tsv")); err != nil {
		return err
	}
	type op struct {
		s     float64
		ok    bool
		bytes int64
		out   int64
	}
	bySize := map[int]map[string]op{}
	var order []int
	for _, row := range rows {
		mb, err := strconv.Atoi(row["size_mb"])
		if err != nil {
			continue
		}
		if bySize[mb] == nil {
			bySize[mb] = map[string]op{}
			order = append(order, mb)
		}
		s, ok := num(row["seconds"])
		bytes, _ := strconv.ParseInt(row["data_bytes"], 10, 64)
		out, _ := strconv.ParseInt(row["out_bytes"], 10, 64)
		bySize[mb][row["op"]] = op{s, ok && row["exit"] == "0", bytes, out}
	}
	sum := func(ops map[string]op, names ...string) *float64 {
		var t float64
		for _, n := range names {
			o, ok := ops[n]
			if !ok || !o.ok {
				return nil
			}
			t += o.s
		}
		return &t
	}
	rate := func(bytes int64, s *float64) *float64 {
		if s == nil || *s <= 0 || bytes <= 0 {
			return nil
		}
		v := float64(bytes) / 1e6 / *s
		return &v
	}
	ratio := func(a, b *float64) *float64 {
		if a == nil || b == nil || *b <= 0 {
			return nil
		}
		v := *a / *b
		return &v
	}
	within := func(s *float64, goal float64) *bool {
		if s == nil {
			return nil
		}
		v := *s <= goal
		return &v
	}
	for _, mb := range order {
		ops := bySize[mb]
		x := BackupSize{MB: mb, DataBytes: ops["backup"].bytes, ArchiveB: ops["backup"].out}
		x.BackupS, x.RawBackS = sum(ops, "backup"), sum(ops, "raw-dump", "raw-tar")
		x.RestoreS, x.RawRestS = sum(ops, "restore"), sum(ops, "raw-load", "raw-untar")
		x.BackupMBps, x.RawBackupMBps, x.BackupRatio = rate(x.DataBytes, x.BackupS), rate(x.DataBytes, x.RawBackS), ratio(x.BackupS, x.RawBackS)
		x.RestoreMBps, x.RawRestoreMBps, x.RestoreRatio = rate(x.DataBytes, x.RestoreS), rate(x.DataBytes, x.RawRestS), ratio(x.RestoreS, x.RawRestS)
		if mb == b.GoalMB {
			x.BackupMet, x.RestoreMet = within(x.BackupS, b.GoalBackupS), within(x.RestoreS, b.GoalRestoreS)
		}
		b.Sizes = append(b.Sizes, x)
	}
	return nil
}

// backupMarkdown is results.md's section on backup and restore.
func backupMarkdown(b Backup, p func(string, ...any)) {
	if len(b.Sizes) == 0 {
		return
	}
	p("\n## Backup and restore by the size of the data\n\n")
	p("A stack with the default tiers and 1 app node; its data grown to each size, half of it database rows (%s) and half binary uploads (%s). **backup** is `bulkhead backup -o FILE` of the running stack; **raw** is the same dump (mariadb-dump --single-transaction through `bulkhead exec db`) plus `tar --zstd` of the uploads. **restore** is `bulkhead restore` after `down --purge`: the stack brought up with the archive's data and verified; **raw** is the dump loaded with mariadb into the running stack plus `tar --zstd -x` of the uploads, neither of which brings anything up. MB/s is the data's bytes (dump and uploads, 10^6 a MB) over the time; ratio is bulkhead's time over the raw tools'. Goals (issue #13), reported, not asserted: a backup of %d MB in %.0f s or less, a restore of %d MB, up and verified, in %.0f s or less.\n\n",
		b.Meta["rows"], b.Meta["files"], b.GoalMB, b.GoalBackupS, b.GoalMB, b.GoalRestoreS)
	p("| size | data MB | archive MB | backup s | MB/s | raw s | raw MB/s | backup/raw | restore s | MB/s | raw s | raw MB/s | restore/raw |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range b.Sizes {
		p("| %d MB | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.MB, float64(x.DataBytes)/1e6, float64(x.ArchiveB)/1e6,
			goal(x.BackupS, x.BackupMet), opt(x.BackupMBps), opt(x.RawBackS), opt(x.RawBackupMBps), opt(x.BackupRatio),
			goal(x.RestoreS, x.RestoreMet), opt(x.RestoreMBps), opt(x.RawRestS), opt(x.RawRestoreMBps), opt(x.RestoreRatio))
	}
	p("\n| size | op | seconds | data bytes | output bytes | exit |\n|---:|---|---:|---:|---:|---:|\n")
	for _, t := range b.Times {
		p("| %s | %s | %s | %s | %s | %s |\n", t["size_mb"], t["op"], t["seconds"], t["data_bytes"], t["out_bytes"], t["exit"])
	}
}

func opt(v *float64) string {
	if v == nil {
		return "-"
	}
	return f2(*v)
}

// goal is a time, marked when it missed its goal.
func goal(v *float64, met *bool) string {
	s := opt(v)
	switch {
	case met == nil:
		return s
	case *met:
		return s + " (goal met)"
	default:
		return "**" + s + " (goal missed)**"
	}
}
