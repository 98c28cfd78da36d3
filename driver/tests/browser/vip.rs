//! Across hosts (F11 and F12 in a real browser): the load balancer holding the VIP fails
//! under an open dashboard or an open maintenance tab. The tab reaches the site only through
//! the VIP, so it sees what a visitor sees while keepalived moves it to the other balancer,
//! and must end on the live dashboard by itself.

use std::time::Instant;

use driver::browser::Engine;
use driver::{BalancerFault, Host, Role};

use crate::support::{Pace, Scene, View, DEADLINE, DETECTION};

/// The dashboard's load balancer rows: name, `data-reachable`, `data-vip`.
const BALANCERS_JS: &str = "return [...document.querySelectorAll('[data-balancer]')].map((li) => \
    [li.dataset.balancer, li.dataset.reachable || '', li.dataset.vip || '']);";

/// Waits until exactly `holders` hold the VIP.
fn wait_for_vip(scene: &Scene, holders: &[Host]) {
    scene.stack.wait_for_vip(holders, DETECTION);
}

/// Makes lb-a fail and waits until lb-b alone holds the VIP; returns when lb-a failed.
fn fail_lb_a(scene: &mut Scene, fault: BalancerFault) -> Instant {
    let failed = Instant::now();
    scene.stack.fail_balancer(Host::LbA, fault);
    wait_for_vip(scene, &[Host::LbB]);
    failed
}

/// An open dashboard while lb-a fails: it stays the dashboard (no origin is down, so never
/// the maintenance page, never a browser error page), and refreshes through lb-b.
fn dashboard_rides_out(engine: Engine, fault: BalancerFault) {
    let mut scene = Scene::across_hosts(engine, Pace::Fast);
    wait_for_vip(&scene, &[Host::LbA]);
    let before = scene.open_dashboard();
    let failed = fail_lb_a(&mut scene, fault);
    let moved: View = scene.wait(DEADLINE, "the tab can be read after the move", |view| {
        Ok::<_, String>(view.clone())
    });
    let live = scene.wait(DEADLINE, "the dashboard refreshes through lb-b", |view| {
        assert_eq!(
            view.page.as_deref(),
            Some("dashboard"),
            "with every origin up the tab must stay on the dashboard: {}\n{}",
            view.summary_line(),
            scene.logs()
        );
        // Two more health polls answered after the move, and data rendered since.
        if view.is_dashboard_with_data() && view.health_polls >= moved.health_polls + 2 {
            Ok(view.clone())
        } else {
            Err("no fresh data through lb-b yet".to_owned())
        }
    });
    assert_eq!(
        live.dashboard_loads,
        before.dashboard_loads,
        "the dashboard reloaded on the way: {}",
        live.summary_line()
    );
    scene.record_healthy_to_back(failed.elapsed());
    // Its server table is lb-b's view now, and its balancer list says so.
    scene.wait_dashboard("the dashboard shows lb-b's view: every server, both mains UP");
    scene.wait(DEADLINE, "the dashboard shows lb-b holding the VIP", |_| {
        let rows: Vec<(String, String, String)> = scene.tab.try_eval_as(BALANCERS_JS)?;
        let lb_b_holds = rows
            .iter()
            .any(|(name, reachable, vip)| name == "lb-b" && reachable == "true" && vip == "true");
        let lb_a_down = rows
            .iter()
            .any(|(name, reachable, vip)| name == "lb-a" && reachable == "false" && vip.is_empty());
        if lb_b_holds && lb_a_down {
            Ok(())
        } else {
            Err(format!("balancer rows: {rows:?}"))
        }
    });
    scene.note(format!("{fault:?}: live again through lb-b"));
}

/// F11, an open dashboard: HAProxy killed on the VIP holder.
pub fn vip1_dashboard_rides_out_haproxy_killed(engine: Engine) {
    dashboard_rides_out(engine, BalancerFault::HaproxyKilled);
}

/// F12, an open dashboard: the VIP holder's host cut off.
pub fn vip2_dashboard_rides_out_its_balancer_cut_off(engine: Engine) {
    dashboard_rides_out(engine, BalancerFault::HostCutOff);
}

/// F11, an open maintenance tab: api-main is down, then HAProxy is killed on the VIP holder
/// while the tab's client polls; api-main comes back only after the VIP has moved, and the
/// tab returns to the dashboard by itself through lb-b.
pub fn vip3_maintenance_tab_returns_after_haproxy_killed(engine: Engine) {
    let mut scene = Scene::across_hosts(engine, Pace::Fast);
    wait_for_vip(&scene, &[Host::LbA]);
    let crashed = Instant::now();
    scene.crash(Role::ApiMain);
    scene.wait_haproxy_down(Role::ApiMain);
    scene.open("/");
    let shown = scene.wait_maintenance(
        &["api-down"],
        "a tab opening / through the VIP shows the maintenance page",
    );
    scene.record_fault_to_maintenance(crashed.elapsed());
    fail_lb_a(&mut scene, BalancerFault::HaproxyKilled);
    scene.stack.server_mut(Role::ApiMain).restart();
    let healthy = Instant::now();
    let back = scene.wait_back_on_dashboard(
        &shown,
        "the maintenance tab returns to the dashboard through lb-b by itself",
    );
    scene.record_healthy_to_back(healthy.elapsed());
    assert_eq!(back.path, "/", "{}", back.summary_line());
}
