//! The process's own figures, as the Prometheus client libraries name
//! them (`process_*`), read from `/proc/self` (Linux; elsewhere they read
//! 0). Sampled with the disk sizes (`super::sample_disk`).

/// One reading; 0 where a file could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

pub fn sample() -> Sample {
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    let mut s = Sample::default();
    if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
        s.cpu_seconds = (stat.utime + stat.stime) as f64 / ticks;
    }
    if let Some((size, resident)) = read("/proc/self/statm").as_deref().and_then(parse_statm) {
        s.virtual_bytes = size as f64 * page;
        s.resident_bytes = resident as f64 * page;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor, open while it is read, is
        // not counted.
        s.open_fds = fds.count().saturating_sub(1) as f64;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        s.max_fds = limit.rlim_cur as f64;
    }
    s
}

/// When this process started, seconds since the Unix epoch: its start
/// in clock ticks after boot (`/proc/self/stat`) plus the boot time
/// (`btime` of `/proc/stat`).
pub fn start_time() -> Option<f64> {
    let stat = parse_stat(&read("/proc/self/stat")?)?;
    let boot = read("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(boot as f64 + stat.start_ticks as f64 / sysconf(libc::_SC_CLK_TCK))
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn sysconf(name: libc::c_int) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as f64
    } else {
        1.0
    }
}

#[derive(Debug, PartialEq)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    pub start_ticks: u64,
}

/// Fields 14, 15 and 22 of `/proc/<pid>/stat` (proc(5)). The command
/// name (field 2) is in parentheses and may hold spaces and
/// parentheses itself: fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// Total and resident pages: the first two fields of `/proc/<pid>/statm`.
pub fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_even_with_spaces_in_it() {
        let line = "4242 (quorum lite) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 123456 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no name at all"), None);
        assert_eq!(parse_statm("2500 600 300 1 0 800 0\n"), Some((2500, 600)));
        assert_eq!(parse_statm("2500"), None);
    }

    #[test]
    fn this_process_reads_its_own_figures() {
        let s = sample();
        assert!(s.cpu_seconds >= 0.0);
        assert!(s.resident_bytes > 0.0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds >= 3.0 && s.max_fds >= s.open_fds, "{s:?}");
        let started = start_time().expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
    }
}
