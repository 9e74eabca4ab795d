//! Unit tests of the policy: the built-in file, blocked patterns, matching, rendering.

use super::blocked::screen;
use super::*;

#[test]
fn dangerous_environment_names_are_recognised() {
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "ld_audit",
        "BASH_ENV",
        "ENV",
        "PATH",
        "SYSTEMD_PAGER",
        "PAGER",
        "MANPAGER",
        "GIT_SSH_COMMAND",
        "PS4",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "IFS",
        "GCONV_PATH",
        "PYTHONPATH",
        "PERL5OPT",
        "RUBYOPT",
        "NODE_OPTIONS",
        "EDITOR",
        "VISUAL",
        "LESSOPEN",
        "MORE",
        "GLIBC_TUNABLES",
        "DOCKER_HOST",
        "HOME",
    ] {
        assert!(dangerous_env(name), "{name}");
    }
    for name in ["LANG", "LC_ALL", "TZ", "TERM", "COLUMNS", "MY_SETTING"] {
        assert!(!dangerous_env(name), "{name}");
    }
}

#[test]
fn env_pty_and_stdin_need_the_template_to_declare_them() {
    let mut policy = Policy::builtin(CommandPolicy::Templates);
    let mut greet = Template::define(
        "greet",
        "greet",
        "",
        Extras {
            env: vec!["GREETING".into()],
            pty: true,
            stdin: true,
            sensitive: false,
        },
        Origin::Tenant,
    )
    .unwrap();
    // A definition cannot declare LD_PRELOAD (see below); the check refuses it even if one did.
    greet.env.push("LD_PRELOAD".into());
    policy.templates.push(greet);
    let uptime = policy.check(&words(&["uptime"])).unwrap();
    let greet = policy.check(&words(&["greet"])).unwrap();
    assert_eq!(policy.check_extras(&uptime, [], false, false), Ok(()));
    assert_eq!(
        policy
            .check_extras(&uptime, ["GREETING"], false, false)
            .unwrap_err()
            .property(),
        "env[0].key"
    );
    assert_eq!(
        policy.check_extras(&uptime, [], true, false),
        Err(PolicyError::PtyNotDeclared("uptime".into()))
    );
    assert_eq!(
        policy.check_extras(&uptime, [], false, true),
        Err(PolicyError::StdinNotDeclared("uptime".into()))
    );
    assert_eq!(
        policy.check_extras(&greet, ["GREETING"], true, true),
        Ok(())
    );
    // Declared or not, a dangerous name is refused outside open mode.
    assert!(matches!(
        policy.check_extras(&greet, ["GREETING", "LD_PRELOAD"], false, false),
        Err(PolicyError::DangerousEnv { index: 1, .. })
    ));
    let open = Policy::builtin(CommandPolicy::Open);
    let any = open.check(&words(&["anything"])).unwrap();
    assert_eq!(
        open.check_extras(&any, ["LD_PRELOAD", "PATH"], true, true),
        Ok(())
    );
}

/// A template without description or extras, as a tenant would define it.
fn template(name: &str, text: &str) -> Template {
    Template::define(name, text, "", Extras::default(), Origin::Tenant).unwrap()
}

fn argv(s: &str) -> Vec<String> {
    crate::command::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_owned()).collect()
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn check(s: &str) -> Result<Approved, PolicyError> {
    Policy::builtin(CommandPolicy::Templates).check(&argv(s))
}

#[test]
fn the_default_templates_are_scalelites_whitelist_and_sound() {
    let policy = Policy::builtin(CommandPolicy::Templates);
    let names: Vec<&str> = policy.templates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "docker_ps",
            "docker_logs",
            "docker_stats",
            "df",
            "free",
            "uptime",
            "top",
            "systemctl_status",
            "systemctl_is_active",
            "netstat",
            "ss",
            "ping",
            "cpuinfo",
            "meminfo",
            "hostname",
            "bbb_status",
            "bbb_check",
            "bbb_secret",
        ]
    );
    let mut unique = std::collections::BTreeSet::new();
    for t in &policy.templates {
        assert!(unique.insert(&t.name), "{} defined twice", t.name);
        // No template's own words trip a blocked pattern.
        let own: Vec<String> = t
            .words
            .iter()
            .filter_map(|w| match w {
                Word::Fixed { value } => Some(value.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(screen(&own), Ok(()), "{}", t.name);
        assert!(!t.program().is_empty(), "{}", t.name);
    }
    assert_eq!(
        policy.templates[1].usage,
        "docker logs {container} [--tail {lines}]"
    );
}

/// The built-in file describes exactly the templates the code used to build by hand: the same
/// names in the same order, descriptions, words (fixed, typed parameters, options), and no
/// env, pty or stdin.
#[test]
fn the_builtin_file_parses_into_scalelites_templates() {
    use ParamKind::*;
    fn f(value: &str) -> Word {
        Word::Fixed {
            value: value.into(),
        }
    }
    fn p(name: &str, kind: ParamKind) -> Word {
        Word::Param {
            name: name.into(),
            kind,
        }
    }
    let expected: Vec<(&str, &str, Vec<Word>)> = vec![
        (
            "docker_ps",
            "List running containers",
            vec![f("docker"), f("ps")],
        ),
        (
            "docker_logs",
            "A container's logs, optionally only the last lines",
            vec![
                f("docker"),
                f("logs"),
                p("container", Container),
                Word::Option {
                    flag: "--tail".into(),
                    name: "lines".into(),
                    kind: Count,
                },
            ],
        ),
        (
            "docker_stats",
            "Container resource usage, once",
            vec![f("docker"), f("stats"), f("--no-stream")],
        ),
        ("df", "Disk usage", vec![f("df"), f("-h")]),
        ("free", "Memory usage", vec![f("free"), f("-m")]),
        ("uptime", "Uptime and load", vec![f("uptime")]),
        (
            "top",
            "One batch snapshot of processes",
            vec![f("top"), f("-b"), f("-n"), f("1")],
        ),
        (
            "systemctl_status",
            "A service's status",
            vec![f("systemctl"), f("status"), p("service", Service)],
        ),
        (
            "systemctl_is_active",
            "Whether a service is active",
            vec![f("systemctl"), f("is-active"), p("service", Service)],
        ),
        (
            "netstat",
            "Listening TCP sockets",
            vec![f("netstat"), f("-tlnp")],
        ),
        ("ss", "Listening TCP sockets", vec![f("ss"), f("-tlnp")]),
        (
            "ping",
            "Three pings",
            vec![f("ping"), f("-c"), f("3"), p("host", Host)],
        ),
        (
            "cpuinfo",
            "CPU information",
            vec![f("cat"), f("/proc/cpuinfo")],
        ),
        (
            "meminfo",
            "Memory information",
            vec![f("cat"), f("/proc/meminfo")],
        ),
        ("hostname", "The host's name", vec![f("hostname")]),
        (
            "bbb_status",
            "BigBlueButton status",
            vec![f("bbb-conf"), f("--status")],
        ),
        (
            "bbb_check",
            "BigBlueButton configuration check",
            vec![f("bbb-conf"), f("--check")],
        ),
        (
            "bbb_secret",
            "BigBlueButton shared secret",
            vec![f("bbb-conf"), f("--secret")],
        ),
    ];
    let parsed = syntax::parse_file(BUILTIN, Origin::Builtin).expect("builtin.templates parses");
    let got: Vec<(&str, &str, Vec<Word>)> = parsed
        .iter()
        .map(|t| (t.name.as_str(), t.description.as_str(), t.words.clone()))
        .collect();
    assert_eq!(got, expected);
    for t in &parsed {
        assert_eq!(
            (t.env.is_empty(), t.pty, t.stdin, t.origin),
            (true, false, false, Origin::Builtin),
            "{}",
            t.name
        );
    }
}

/// The syntax's errors say what is wrong and where; the file's name the line.
#[test]
fn template_definitions_are_checked_and_errors_name_the_property() {
    let define = |name: &str, text: &str, env: &[&str]| {
        Template::define(
            name,
            text,
            "",
            Extras {
                env: env.iter().map(|e| (*e).to_owned()).collect(),
                ..Extras::default()
            },
            Origin::Tenant,
        )
    };
    let t = define(
        "tail_log",
        "tail -n {lines:count} {unit:service}",
        &["LANG"],
    )
    .unwrap();
    assert_eq!(t.usage, "tail -n {lines} {unit}");
    for (name, text, env, property, fragment) in [
        ("Bad-Name", "uptime", &[][..], "name", "lower-case"),
        ("x", "", &[], "template", "starts with the program"),
        ("x", "{host} -c", &[], "template", "starts with the program"),
        (
            "x",
            "ping {target:address}",
            &[],
            "template",
            "unknown kind \"address\"",
        ),
        ("x", "ping {Target:host}", &[], "template", "parameter name"),
        ("x", "ping {host", &[], "template", "closing brace"),
        (
            "x",
            "ping [--count {n:count}",
            &[],
            "template",
            "optional group",
        ),
        (
            "x",
            "ping [c {n:count}]",
            &[],
            "template",
            "option starting with '-'",
        ),
        ("x", "ping {host} {host}", &[], "template", "appears twice"),
        (
            "x",
            "ping 'a'",
            &[],
            "template",
            "not allowed in a fixed word",
        ),
        ("x", "uptime ;", &[], "template", "command chaining"),
        ("x", "reboot", &[], "template", "system control"),
        ("x", "sh -c {cmd:service}", &[], "template", "shell"),
        ("x", "/usr/bin/uptime", &[], "template", "path"),
        ("x", "uptime", &["LD_PRELOAD"], "env[0]", "load code"),
        ("x", "uptime", &["LANG", "1X"], "env[1]", "letters, digits"),
        ("x", "uptime", &["LANG", "LANG"], "env[1]", "twice"),
    ] {
        let err = define(name, text, env).unwrap_err();
        assert_eq!(err.property, property, "{text}: {err}");
        assert!(err.reason.contains(fragment), "{text}: {err}");
    }
    let err = syntax::parse_file("a: uptime\n    colour: red\n", Origin::Builtin).unwrap_err();
    assert!(err.starts_with("line 2:"), "{err}");
    let err = syntax::parse_file("a: uptime\nb: ping {x:y}\n", Origin::Builtin).unwrap_err();
    assert!(err.starts_with("line 2: template b: template:"), "{err}");
    let err = syntax::parse_file("a: uptime\na: df -h\n", Origin::Builtin).unwrap_err();
    assert!(err.contains("defined twice"), "{err}");
}

/// A tenant's templates are matched after the built-ins, and only in the policy that has them.
#[test]
fn a_tenants_templates_extend_the_builtin_set() {
    let builtin = Policy::builtin(CommandPolicy::Templates);
    let tenant = builtin.with_tenant([template("tail_n", "tail -n {lines:count} {unit:service}")]);
    let call = argv("tail -n 20 nginx");
    assert_eq!(
        tenant.check(&call).unwrap().template.as_deref(),
        Some("tail_n")
    );
    assert!(matches!(
        builtin.check(&call),
        Err(PolicyError::NotAllowed { .. })
    ));
    assert_eq!(
        tenant
            .render("tail_n", &args(&[("lines", "20"), ("unit", "nginx")]))
            .unwrap()
            .argv,
        call
    );
    assert!(matches!(
        tenant.check(&argv("tail -n -5 nginx")),
        Err(PolicyError::NotAllowed { closest: Some(c), .. }) if c == "tail_n"
    ));
}

#[test]
fn every_template_accepts_its_canonical_use() {
    let policy = Policy::builtin(CommandPolicy::Templates);
    let mut covered = std::collections::BTreeSet::new();
    for (command, name) in [
        ("docker ps", "docker_ps"),
        ("docker logs web-1", "docker_logs"),
        ("docker logs web-1 --tail 100", "docker_logs"),
        ("docker logs 3f4e5a6b7c8d --tail 1", "docker_logs"),
        ("docker logs web --tail 10000", "docker_logs"),
        ("docker stats --no-stream", "docker_stats"),
        ("df -h", "df"),
        ("free -m", "free"),
        ("uptime", "uptime"),
        ("top -b -n 1", "top"),
        ("systemctl status nginx.service", "systemctl_status"),
        ("systemctl status getty@tty1.service", "systemctl_status"),
        (
            "systemctl is-active getty@tty1.service",
            "systemctl_is_active",
        ),
        ("netstat -tlnp", "netstat"),
        ("ss -tlnp", "ss"),
        ("ping -c 3 example.com", "ping"),
        ("ping -c 3 10.0.0.1", "ping"),
        ("ping -c 3 ::1", "ping"),
        ("ping -c 3 fe80::1", "ping"),
        ("ping -c 3 localhost", "ping"),
        ("ping -c 3 3com.net", "ping"),
        ("cat /proc/cpuinfo", "cpuinfo"),
        ("cat /proc/meminfo", "meminfo"),
        ("hostname", "hostname"),
        ("bbb-conf --status", "bbb_status"),
        ("bbb-conf --check", "bbb_check"),
        ("bbb-conf --secret", "bbb_secret"),
        // Quoting changes nothing once parsed.
        ("'docker' \"logs\" w\\eb", "docker_logs"),
    ] {
        let approved = policy
            .check(&argv(command))
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(
            (approved.template, approved.argv),
            (Some(name.to_owned()), argv(command))
        );
        covered.insert(name);
    }
    for t in &policy.templates {
        assert!(covered.contains(t.name.as_str()), "{} untested", t.name);
    }
}

#[test]
fn near_misses_name_the_closest_template_and_what_differs() {
    for (command, closest, why) in [
        ("docker logs", "docker_logs", "missing {container}"),
        (
            "docker logs -f web",
            "docker_logs",
            "must not start with '-'",
        ),
        (
            "docker logs --since=1h web",
            "docker_logs",
            "must not start",
        ),
        ("docker logs web -f", "docker_logs", "unexpected \"-f\""),
        (
            "docker logs web --tail",
            "docker_logs",
            "--tail needs a value",
        ),
        ("docker logs web --tail 0", "docker_logs", "from 1 to 10000"),
        ("docker logs web --tail 99999", "docker_logs", "from 1 to"),
        ("docker logs web --tail 010", "docker_logs", "leading zeros"),
        ("docker logs web --tail +10", "docker_logs", "without sign"),
        ("docker logs web --tail=5", "docker_logs", "unexpected"),
        ("docker rm web", "docker_ps", "expected \"ps\""),
        ("docker stats", "docker_stats", "missing \"--no-stream\""),
        ("ping -c 4 host", "ping", "expected \"3\""),
        ("ping -c 3 -f host", "ping", "must not start with '-'"),
        ("ping -c 3 example.com -f", "ping", "unexpected \"-f\""),
        ("ping -c 3 -oProxyCommand=x", "ping", "must not start"),
        ("ping -c 3 127.1", "ping", "IPv4"),
        ("ping -c 3 0x7f000001", "ping", "IPv4"),
        ("ping -c 3 2130706433", "ping", "IPv4"),
        ("ping -c 3 exa_mple.com", "ping", "labels"),
        ("ping -c 3 a..b", "ping", "labels"),
        ("ping -c 3 host.123", "ping", "last label"),
        ("df -h /", "df", "unexpected \"/\""),
        ("cat /etc/shadow", "cpuinfo", "expected \"/proc/cpuinfo\""),
        (
            "systemctl status -H evil",
            "systemctl_status",
            "must not start",
        ),
        (
            "systemctl status .hidden",
            "systemctl_status",
            "start with a letter",
        ),
        (
            "systemctl restart nginx",
            "systemctl_status",
            "expected \"status\"",
        ),
        ("hostname evil", "hostname", "unexpected \"evil\""),
    ] {
        match check(command) {
            Err(
                ref e @ PolicyError::NotAllowed {
                    closest: ref got, ..
                },
            ) => {
                let reason = e.to_string();
                assert_eq!(got.as_deref(), Some(closest), "{command}: {reason}");
                assert!(reason.contains(why), "{command}: {reason}");
                assert!(reason.contains("the closest is"), "{command}: {reason}");
                assert_eq!(e.property(), "command");
            }
            other => panic!("{command}: {other:?}"),
        }
    }
    match check("echo hello") {
        Err(e @ PolicyError::NotAllowed { closest: None, .. }) => {
            assert!(
                e.to_string()
                    .starts_with("no allowed template runs \"echo\""),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Policy::builtin(CommandPolicy::Templates).check(&[]),
        Err(PolicyError::NotAllowed { closest: None, .. })
    ));
}

#[test]
fn blocked_patterns_come_first_and_say_why() {
    for (command, pattern, why) in [
        ("rm -rf /", "rm -r", "recursive deletion"),
        ("rm -fr /tmp/x", "rm -r", "recursive deletion"),
        ("rm --recursive x", "rm -r", "recursive deletion"),
        ("rm -R x", "rm -r", "recursive deletion"),
        ("rm x", "rm", "file deletion"),
        ("/bin/rm -rf /", "rm -r", "recursive deletion"),
        ("dd if=/dev/zero of=/dev/sda", "dd", "data loss"),
        ("mkfs.ext4 /dev/sda1", "mkfs.ext4", "data loss"),
        ("truncate -s 0 /var/log/syslog", "truncate", "data loss"),
        ("shutdown -h now", "shutdown", "system control"),
        ("reboot", "reboot", "system control"),
        ("halt", "halt", "system control"),
        ("poweroff", "poweroff", "system control"),
        ("init 0", "init 0", "system control"),
        ("telinit 6", "telinit 6", "system control"),
        ("/sbin/reboot", "reboot", "system control"),
        ("./shutdown -h now", "shutdown", "system control"),
        (
            "/usr/bin/../sbin/shutdown now",
            "shutdown",
            "system control",
        ),
        ("REBOOT", "reboot", "system control"),
        ("systemctl poweroff", "systemctl poweroff", "system control"),
        (
            "systemctl --force reboot",
            "systemctl reboot",
            "system control",
        ),
        (
            "systemctl isolate rescue.target",
            "systemctl isolate",
            "system control",
        ),
        ("passwd root", "passwd", "user management"),
        ("useradd eve", "useradd", "user management"),
        ("userdel bob", "userdel", "user management"),
        ("usermod -aG sudo eve", "usermod", "user management"),
        ("chmod 777 /etc", "chmod 777", "permission changes"),
        ("chmod 0777 /etc", "chmod 777", "permission changes"),
        ("chmod a+rwx /etc", "chmod 777", "permission changes"),
        ("chmod 644 /etc/x", "chmod", "permission changes"),
        ("chown eve /etc", "chown", "permission changes"),
        ("setfacl -m u:eve:rwx /etc", "setfacl", "permission changes"),
        ("sudo id", "sudo", "wrapper"),
        ("su -", "su", "wrapper"),
        ("env X=1 id", "env", "wrapper"),
        ("busybox reboot", "busybox", "wrapper"),
        ("xargs reboot", "xargs", "wrapper"),
        ("nohup uptime", "nohup", "wrapper"),
        ("timeout 5 uptime", "timeout", "wrapper"),
        ("nice uptime", "nice", "wrapper"),
        ("systemd-run reboot", "systemd-run", "wrapper"),
        ("sh -c id", "sh -c", "shell"),
        ("bash -lc uptime", "bash -c", "shell"),
        ("/bin/bash", "bash", "shell"),
        ("eval uptime", "eval", "builtin"),
        ("exec reboot", "exec", "builtin"),
        ("source /tmp/x", "source", "builtin"),
        (". /tmp/x", ".", "builtin"),
        ("command reboot", "command", "builtin"),
        ("builtin eval id", "builtin", "builtin"),
        ("trap reboot EXIT", "trap", "builtin"),
        ("alias ls=reboot", "alias", "builtin"),
        ("python3 -c 'import os'", "python3", "interpreter"),
        ("python3.11 x.py", "python3.11", "interpreter"),
        ("perl -e 1", "perl", "interpreter"),
        ("awk 1", "awk", "interpreter"),
        ("find / -delete", "find", "interpreter"),
        ("/usr/bin/uptime", "\"/usr/bin/uptime\"", "path"),
        ("./uptime", "\"./uptime\"", "path"),
        ("echo 'a;b'", ";", "chaining"),
        ("uptime 'a&&b'", "&&", "chaining"),
        ("uptime 'a||b'", "||", "chaining"),
        ("echo 'a|b'", "|", "pipe"),
        ("uptime 'a&b'", "&", "background"),
        ("echo '$(id)'", "$(", "command substitution"),
        ("uptime '${IFS}'", "${", "parameter expansion"),
        ("uptime '`id`'", "`", "command substitution"),
        ("uptime '>x'", ">", "redirection"),
        ("uptime '<x'", "<", "redirection"),
        (
            "reb\u{043e}ot",
            "U+043E \u{043e}",
            "non-ASCII character in the program name",
        ),
        ("uptime\u{ff1b}reboot", "U+FF1B \u{ff1b}", "non-ASCII"),
        (
            "ping -c 3 ex\u{0430}mple.com",
            "U+0430 \u{0430}",
            "argument 3",
        ),
        ("cat /proc/cpuinfo\u{0301}", "U+0301", "non-ASCII"),
        ("uptime 'a\tb'", "U+0009", "control character in argument 1"),
    ] {
        match check(command) {
            Err(e @ PolicyError::Blocked { .. }) => {
                let PolicyError::Blocked { pattern: p, reason } = &e else {
                    unreachable!()
                };
                assert_eq!(p, pattern, "{command}: {reason}");
                assert!(reason.contains(why), "{command}: {reason}");
                assert_eq!(e.property(), "command");
            }
            other => panic!("{command}: {other:?}"),
        }
    }
    // An argv that did not come through the parser: invisible and control characters.
    let policy = Policy::builtin(CommandPolicy::Templates);
    for (bad, pattern) in [
        (words(&["uptime", "a\nreboot"]), "\\n"),
        (words(&["uptime", "a\r"]), "\\r"),
        (words(&["uptime", "a\0"]), "U+0000"),
        (words(&["up\u{200b}time"]), "U+200B"),
        (words(&["\u{202e}toober"]), "U+202E"),
        (words(&["uptime", "\u{feff}"]), "U+FEFF"),
        (words(&["uptime", "\u{a0}"]), "U+00A0"),
        (words(&["uptime", "\u{2028}"]), "U+2028"),
    ] {
        assert!(
            matches!(policy.check(&bad), Err(PolicyError::Blocked { pattern: p, .. }) if p == pattern),
            "{bad:?}: {:?}",
            policy.check(&bad)
        );
    }
    assert_eq!(
        check("rm -rf /").unwrap_err().to_string(),
        "blocked: rm -r (recursive deletion - data loss risk)"
    );
}

#[test]
fn open_mode_trusts_the_caller_but_the_parser_still_refuses_hidden_characters() {
    let open = Policy::builtin(CommandPolicy::Open);
    for command in ["sh -c 'echo a; echo b'", "eval uptime", "echo héllo"] {
        let approved = open.check(&argv(command)).unwrap();
        assert_eq!((approved.template, approved.argv), (None, argv(command)));
    }
    for hidden in ["echo a\u{200b}", "\u{202e}toober", "echo a\u{2028}b"] {
        assert!(
            matches!(
                crate::command::parse(hidden),
                Err(crate::command::CommandError::Invisible(_))
            ),
            "{hidden:?}"
        );
    }
}

#[test]
fn an_argv_two_templates_match_is_refused() {
    let ambiguous = Policy {
        templates: vec![template("a", "uptime"), template("b", "uptime")],
        mode: CommandPolicy::Templates,
    };
    let err = ambiguous.check(&argv("uptime")).unwrap_err();
    assert_eq!(err, PolicyError::Ambiguous(vec!["a".into(), "b".into()]));
    assert_eq!(err.property(), "command");
    assert!(err.to_string().contains("ambiguous"), "{err}");
    assert_eq!(
        ambiguous.render("a", &BTreeMap::new()),
        Err(PolicyError::Ambiguous(vec!["a".into(), "b".into()]))
    );
    // A parameter that overlaps a fixed word of another template is ambiguous too.
    let overlapping = Policy {
        templates: vec![
            template("status", "systemctl status {service}"),
            template("status_nginx", "systemctl status nginx"),
        ],
        mode: CommandPolicy::Templates,
    };
    assert!(matches!(
        overlapping.check(&argv("systemctl status nginx")),
        Err(PolicyError::Ambiguous(_))
    ));
    assert_eq!(
        overlapping
            .check(&argv("systemctl status ssh"))
            .unwrap()
            .template
            .as_deref(),
        Some("status")
    );
}

#[test]
fn param_kinds_validate_their_values() {
    use ParamKind::*;
    let ok = |k: ParamKind, v: &str| assert!(k.validate(v).is_ok(), "{k:?} {v:?}");
    let bad = |k: ParamKind, v: &str| assert!(k.validate(v).is_err(), "{k:?} {v:?}");

    ok(Container, "web");
    ok(Container, "a");
    ok(Container, "my_app.web-1");
    ok(Container, &"a".repeat(128));
    bad(Container, &"a".repeat(129));
    bad(Container, "");
    bad(Container, "-f");
    bad(Container, "_web");
    bad(Container, "we b");
    bad(Container, "web:latest");
    bad(Container, "../etc");

    ok(Service, "nginx.service");
    ok(Service, "getty@tty1.service");
    ok(Service, "systemd-journald");
    ok(Service, "dev-disk-by:x.device");
    bad(Service, "-nginx");
    bad(Service, "nginx/../x");
    bad(Service, ".hidden");

    ok(Host, "example.com");
    ok(Host, "localhost");
    ok(Host, "a-b.c-d.example");
    ok(Host, "xn--80ak6aa92e.com");
    ok(Host, "192.168.1.1");
    ok(Host, "0.0.0.0");
    ok(Host, "::1");
    ok(Host, "2001:db8::8a2e:370:7334");
    ok(Host, "::ffff:127.0.0.1");
    ok(Host, "3com.net");
    ok(Host, &format!("{}.com", "a".repeat(63)));
    for refused in [
        "-example.com",
        "example-.com",
        "example..com",
        "a..b",
        ".example.com",
        "example.com.",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "127.1",
        "127.0.1",
        "2130706433",
        "017700000001",
        "0x7f000001",
        "0x7f.0.0.1",
        "0X7F.1",
        "1.2.3.4.5",
        "[::1]",
        "[2001:db8::1]",
        "fe80::1%eth0",
        "host.123",
        "exa_mple.com",
        "a b",
        "a:b",
        "*.example.com",
    ] {
        bad(Host, refused);
    }
    bad(Host, &format!("{}.com", "a".repeat(64)));
    bad(Host, &format!("{}a", "a.".repeat(127)));

    ok(Count, "1");
    ok(Count, "100");
    ok(Count, "10000");
    for refused in [
        "0",
        "10001",
        "99999",
        "-1",
        "+1",
        "01",
        "1e2",
        "0x10",
        " 1",
        "1 ",
        "99999999999999999999",
        "",
    ] {
        bad(Count, refused);
    }
}

#[test]
fn rendering_builds_the_same_argv_the_checker_accepts() {
    let policy = Policy::builtin(CommandPolicy::Templates);
    let approved = policy
        .render(
            "docker_logs",
            &args(&[("container", "web"), ("lines", "50")]),
        )
        .unwrap();
    assert_eq!(approved.argv, ["docker", "logs", "web", "--tail", "50"]);
    assert_eq!(policy.check(&approved.argv).unwrap(), approved);
    let approved = policy
        .render("docker_logs", &args(&[("container", "web")]))
        .unwrap();
    assert_eq!(approved.argv, ["docker", "logs", "web"]);
    assert_eq!(
        policy.render("uptime", &BTreeMap::new()).unwrap().argv,
        ["uptime"]
    );
    assert_eq!(
        policy
            .render("ping", &args(&[("host", "2001:db8::1")]))
            .unwrap()
            .argv,
        ["ping", "-c", "3", "2001:db8::1"]
    );
    // Templates render in open mode as well.
    assert_eq!(
        Policy::builtin(CommandPolicy::Open)
            .render("hostname", &BTreeMap::new())
            .unwrap()
            .template
            .as_deref(),
        Some("hostname")
    );
}

#[test]
fn render_errors_name_the_argument() {
    let policy = Policy::builtin(CommandPolicy::Templates);
    let err = policy.render("format_disk", &BTreeMap::new()).unwrap_err();
    assert_eq!(err, PolicyError::UnknownTemplate("format_disk".into()));
    assert_eq!(err.property(), "template");

    let err = policy.render("ping", &BTreeMap::new()).unwrap_err();
    assert_eq!(err, PolicyError::MissingArgument("host".into()));
    assert_eq!(err.property(), "args.host");

    let err = policy
        .render("uptime", &args(&[("host", "x")]))
        .unwrap_err();
    assert!(matches!(err, PolicyError::UnexpectedArgument { .. }));
    assert_eq!(err.property(), "args.host");
    let err = policy
        .render("docker_logs", &args(&[("container", "web"), ("x", "1")]))
        .unwrap_err();
    assert_eq!(err.property(), "args.x");

    for (template, name, value, why) in [
        ("ping", "host", "-f", "must not start with '-'"),
        ("ping", "host", "", "must not be empty"),
        ("ping", "host", "a;reboot", "contains ;"),
        ("ping", "host", "a\nb", "contains \\n"),
        ("ping", "host", "ex\u{0430}mple.com", "non-ASCII"),
        ("ping", "host", "a\u{200b}", "invisible"),
        ("ping", "host", "127.1", "IPv4"),
        ("ping", "host", "[::1]", "labels"),
        ("docker_logs", "container", "../etc", "start with a letter"),
        ("docker_logs", "container", "web/x", "letters, digits"),
        (
            "systemctl_status",
            "service",
            "--host=evil",
            "must not start",
        ),
    ] {
        let err = policy
            .render(template, &args(&[(name, value)]))
            .unwrap_err();
        assert_eq!(err.property(), format!("args.{name}"), "{value:?}");
        let message = err.to_string();
        assert!(message.contains("is not a valid"), "{message}");
        match err {
            PolicyError::BadArgument { reason, .. } => {
                assert!(reason.contains(why), "{value:?}: {reason}")
            }
            other => panic!("{value:?}: {other:?}"),
        }
    }
    let err = policy
        .render(
            "docker_logs",
            &args(&[("container", "web"), ("lines", "0")]),
        )
        .unwrap_err();
    assert_eq!(err.property(), "args.lines");
}

mod properties {
    //! Property tests of the whole pipeline, `command::parse` then [`Policy::check`], and
    //! of [`Policy::render`] against it.

    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn pipeline(policy: &Policy, line: &str) -> Option<Approved> {
        let argv = crate::command::parse(line).ok()?;
        policy.check(&argv).ok()
    }

    fn container() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}"
    }

    fn service() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9@._:-]{0,127}"
    }

    fn host() -> impl Strategy<Value = String> {
        let label = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?";
        prop_oneof![
            (prop::collection::vec(label, 0..4), "[a-z][a-z0-9]{0,10}").prop_map(
                |(mut labels, tld)| {
                    labels.push(tld);
                    labels.join(".")
                }
            ),
            any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
            any::<u128>().prop_map(|n| Ipv6Addr::from(n).to_string()),
        ]
    }

    /// A template call with valid arguments: (template, args, the expected argv).
    fn valid_call() -> impl Strategy<Value = (String, BTreeMap<String, String>, Vec<String>)> {
        let plain = prop::sample::select(
            Policy::builtin(CommandPolicy::Templates)
                .templates
                .into_iter()
                .filter(|t| t.words.iter().all(|w| matches!(w, Word::Fixed { .. })))
                .map(|t| t.name)
                .collect::<Vec<_>>(),
        )
        .prop_map(|name| {
            let policy = Policy::builtin(CommandPolicy::Templates);
            let t = policy.templates.iter().find(|t| t.name == name).unwrap();
            let argv = t
                .words
                .iter()
                .map(|w| match w {
                    Word::Fixed { value } => value.clone(),
                    _ => unreachable!(),
                })
                .collect();
            (name, BTreeMap::new(), argv)
        });
        let logs = (container(), prop::option::of(1u32..=10_000)).prop_map(|(c, lines)| {
            let mut args = BTreeMap::from([("container".to_owned(), c.clone())]);
            let mut argv = words(&["docker", "logs", &c]);
            if let Some(n) = lines {
                args.insert("lines".into(), n.to_string());
                argv.extend(["--tail".to_owned(), n.to_string()]);
            }
            ("docker_logs".to_owned(), args, argv)
        });
        let systemctl = (any::<bool>(), service()).prop_map(|(status, s)| {
            let (name, verb) = if status {
                ("systemctl_status", "status")
            } else {
                ("systemctl_is_active", "is-active")
            };
            let args = BTreeMap::from([("service".to_owned(), s.clone())]);
            (name.to_owned(), args, words(&["systemctl", verb, &s]))
        });
        let ping = host().prop_map(|h| {
            let args = BTreeMap::from([("host".to_owned(), h.clone())]);
            ("ping".to_owned(), args, words(&["ping", "-c", "3", &h]))
        });
        prop_oneof![plain, logs, systemctl, ping]
    }

    /// Argument values that are sometimes valid and often not.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            container(),
            host(),
            "-[a-zA-Z=-]{0,10}",
            "[0-9]{0,6}",
            "[0-9a-fA-Fx.]{0,12}",
            "[ -~]{0,20}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Nothing panics, whatever the input, in either mode.
        #[test]
        fn the_pipeline_never_panics(input in any::<String>(), printable in "[ -~]{0,200}") {
            for policy in [Policy::builtin(CommandPolicy::Templates), Policy::builtin(CommandPolicy::Open)] {
                let _ = pipeline(&policy, &input);
                let _ = pipeline(&policy, &printable);
            }
        }

        /// A chaining, substitution or redirection character is never accepted, wherever it
        /// stands and however it is quoted.
        #[test]
        fn shell_metacharacters_never_pass(
            prefix in prop::collection::vec(any::<char>(), 0..30),
            meta in prop::sample::select(vec![';', '|', '&', '$', '`', '<', '>', '\n']),
            suffix in prop::collection::vec(any::<char>(), 0..30),
            call in valid_call(),
        ) {
            let policy = Policy::builtin(CommandPolicy::Templates);
            let prefix: String = prefix.into_iter().collect();
            let suffix: String = suffix.into_iter().collect();
            let canonical = call.2.join(" ");
            for line in [
                format!("{prefix}{meta}{suffix}"),
                format!("{canonical}{meta}{suffix}"),
                format!("{canonical} '{prefix}{meta}{suffix}'"),
                format!("{canonical} \"{meta}\""),
                format!("{canonical}\\{meta}"),
            ] {
                let accepted = pipeline(&policy, &line);
                prop_assert!(accepted.is_none(), "{:?}: {:?}", line, accepted);
            }
        }

        /// Invisible characters never pass the parser, in either mode.
        #[test]
        fn invisible_characters_never_parse(
            prefix in "[ -~]{0,20}",
            hidden in prop::sample::select(vec!['\u{200b}', '\u{200e}', '\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{a0}', '\u{ad}', '\u{e0041}']),
            suffix in "[ -~]{0,20}",
        ) {
            let line = format!("{prefix}{hidden}{suffix}");
            prop_assert!(crate::command::parse(&line).is_err(), "{:?}", line);
        }

        /// Valid invocations are accepted, with exactly their argv, by both ways in.
        #[test]
        fn valid_invocations_are_accepted((name, args, argv) in valid_call()) {
            let policy = Policy::builtin(CommandPolicy::Templates);
            let line = argv.join(" ");
            let expected = Approved { template: Some(name.clone()), argv };
            prop_assert_eq!(pipeline(&policy, &line), Some(expected.clone()), "{:?}", line);
            prop_assert_eq!(policy.render(&name, &args), Ok(expected));
        }

        /// `render` and `check` agree: what one accepts the other accepts the same way, and
        /// a value one refuses the other refuses too.
        #[test]
        fn render_and_check_agree(
            template in prop::sample::select(vec!["docker_logs", "systemctl_status", "systemctl_is_active", "ping"]),
            value in any_value(),
            lines in prop::option::of(any_value()),
        ) {
            let policy = Policy::builtin(CommandPolicy::Templates);
            let t = policy.templates.iter().find(|t| t.name == template).unwrap();
            let mut argv = Vec::new();
            let mut args = BTreeMap::new();
            for word in &t.words {
                match word {
                    Word::Fixed { value } => argv.push(value.clone()),
                    Word::Param { name, .. } => {
                        args.insert(name.clone(), value.clone());
                        argv.push(value.clone());
                    }
                    Word::Option { flag, name, .. } => {
                        if let Some(n) = &lines {
                            args.insert(name.clone(), n.clone());
                            argv.extend([flag.clone(), n.clone()]);
                        }
                    }
                }
            }
            let rendered = policy.render(template, &args);
            let checked = policy.check(&argv);
            match (&rendered, &checked) {
                (Ok(r), Ok(c)) => {
                    prop_assert_eq!(r, c);
                    prop_assert_eq!(&r.argv, &argv);
                    prop_assert_eq!(r.template.as_deref(), Some(template));
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "render {:?} but check {:?}", rendered, checked),
            }
        }

        /// No parameter takes a value starting with '-', by either way in.
        #[test]
        fn dash_values_are_never_accepted(rest in "[ -~]{0,20}", call in valid_call()) {
            let policy = Policy::builtin(CommandPolicy::Templates);
            let value = format!("-{rest}");
            let (name, args, argv) = call;
            for key in args.keys() {
                let mut bad = args.clone();
                bad.insert(key.clone(), value.clone());
                let refused = matches!(
                    policy.render(&name, &bad),
                    Err(PolicyError::BadArgument { name: param, .. }) if &param == key
                );
                prop_assert!(refused, "{}: {:?}", name, bad);
                let mut bad_argv = argv.clone();
                let i = argv.iter().rposition(|w| w == &args[key]).unwrap();
                bad_argv[i] = value.clone();
                prop_assert!(policy.check(&bad_argv).is_err(), "{:?}", bad_argv);
            }
        }
    }
}

#[test]
fn sensitive_templates_mark_their_jobs_in_either_mode() {
    let templates = Policy::builtin(CommandPolicy::Templates);
    let secret = templates.check(&argv("bbb-conf --secret")).unwrap();
    assert!(templates.sensitive(&secret));
    let status = templates.check(&argv("bbb-conf --status")).unwrap();
    assert!(!templates.sensitive(&status));
    let rendered = templates.render("bbb_secret", &args(&[])).unwrap();
    assert!(templates.sensitive(&rendered));
    // Open mode approves any argv without a template; an instance of a sensitive one is still
    // sensitive.
    let open = Policy::builtin(CommandPolicy::Open);
    assert!(open.sensitive(&open.check(&argv("bbb-conf --secret")).unwrap()));
    assert!(!open.sensitive(&open.check(&argv("bbb-conf --secret extra")).unwrap()));
    assert!(!open.sensitive(&open.check(&argv("uptime")).unwrap()));
    // The file syntax: `sensitive` under a template.
    let parsed =
        syntax::parse_file("a: echo a\n    sensitive\nb: echo b\n", Origin::Tenant).unwrap();
    assert!(parsed[0].sensitive && !parsed[1].sensitive);
    assert!(syntax::parse_file("a: echo a\n    sensitive: yes\n", Origin::Tenant).is_err());
}
