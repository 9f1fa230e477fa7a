//! Data parallelism: one training loop replicated over devices and machines, with Burn's
//! all-reduce (`burn-collective`).
//!
//! `tril run devices=N` runs N replicas of the run's loop in one process, one thread per
//! device (`cuda:i`, `cuda:i+1`, ... for `device=cuda:i`; N replicas of the CPU backend on
//! a CPU). With `distributed.nodes=M` (one process per machine, e.g. under `srun`), the M
//! processes join over the network: an orchestrator on node 0 and a tensor data service
//! on every node (WebSocket). Global rank = `node_rank * devices + local_rank`.
//!
//! What every replica does, through code all trainers share (no per-algorithm code):
//! - **Same start.** Within a process the replicas build their models one at a time (the
//!   host generator fresh weights are drawn from is process-wide), and the first gradient
//!   exchange compares a fingerprint of the parameters: replicas that start apart stop
//!   with an error instead of silently training different models.
//! - **Its shard of the data.** Loops that draw one batch per optimizer step take
//!   [`shard_range`] of it: the batch sizes of a config are *global*, so `devices=2` with
//!   `batch_size: B` (B/2 per replica) trains as `devices=1` with `batch_size: B`. Rollout
//!   loops sample prompts from their own [`partition`] of the prompt set with their own
//!   random stream ([`stream`]); their `*_per_process` sizes are per replica, as TRIL's
//!   `batch_size_per_process` under accelerate.
//! - **One gradient.** [`crate::ops::clip_grad_norm`], which every trainer calls before
//!   its optimizer step, first replaces each replica's gradient `g_r` by
//!   `sum_r w_r g_r` with `w_r = |shard_r| / |batch|` ([`sync_grads`]): the gradient of the
//!   global batch's mean loss. The norm, the clipping, the guard's verdict and the step
//!   are then the same on every replica, so the weights stay equal.
//! - **One decision.** Stopping on a signal ([`any`]) and any other choice all
//!   replicas must make together ([`all_sum`]) are agreed with a small all-reduce.
//! - **One writer.** Only the primary replica (global rank 0) writes: [`RunDir`] writes
//!   and the tracker are no-ops on the others. Every replica still evaluates (same
//!   weights, its own samples); rank 0's results are the ones logged.
//!
//! The state is per thread: the launcher ([`enter`]) gives each replica's thread its
//! [`Replica`]; outside a replica thread every function here is the single-device
//! identity (rank 0 of 1, no communication).
//!
//! [`RunDir`]: crate::run_dir::RunDir

use crate::error::CoreError;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// The root config's data-parallel keys: `devices` and the `distributed` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// Machines (processes) in the run; > 1 joins them over the network.
    pub nodes: usize,
    /// This machine's index in `0..nodes` (null: `SLURM_NODEID`, else 0).
    pub node_rank: Option<usize>,
    /// Host of node 0, where the orchestrator listens (null: the first host of
    /// `SLURM_JOB_NODELIST`, else 127.0.0.1).
    pub master_addr: Option<String>,
    /// Port of the orchestrator on node 0.
    pub master_port: u16,
    /// Port of this node's tensor data service (`data_port + node_rank`, so several
    /// nodes on one host do not collide).
    pub data_port: u16,
    /// How the other nodes reach this one (null: 127.0.0.1 when `master_addr` is a
    /// loopback address, else this machine's hostname).
    pub node_addr: Option<String>,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            nodes: 1,
            node_rank: None,
            master_addr: None,
            master_port: 29500,
            data_port: 29600,
            node_addr: None,
        }
    }
}

impl crate::config::Ranges for DistributedConfig {
    /// `nodes >= 1`, `node_rank < nodes`, ports above 0.
    fn check_ranges(&self, c: &crate::config::Checker<'_>) -> crate::Result<()> {
        c.ensure(self.nodes >= 1, "distributed.nodes", "expected at least 1 machine")?;
        if let Some(r) = self.node_rank {
            c.ensure(
                r < self.nodes,
                "distributed.node_rank",
                format!("expected an index below distributed.nodes ({}), found {r}", self.nodes),
            )?;
        }
        c.ensure(self.master_port > 0, "distributed.master_port", "expected a port above 0")?;
        c.ensure(self.data_port > 0, "distributed.data_port", "expected a port above 0")
    }
}

/// Where one replica sits among all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Index of this replica's device on its machine.
    pub local_rank: usize,
    /// Replicas per machine (`devices`).
    pub devices: usize,
    /// Index of this machine.
    pub node_rank: usize,
    /// Machines.
    pub nodes: usize,
    /// How the machines meet (`None` with one machine).
    pub network: Option<Network>,
}

/// The addresses of a multi-machine run (WebSocket URLs, `ws://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The orchestrator (on node 0).
    pub orchestrator: String,
    /// Its port (node 0 starts it there).
    pub orchestrator_port: u16,
    /// This node's tensor data service, as the others reach it.
    pub node_address: String,
    /// The port the data service listens on.
    pub data_port: u16,
}

impl Replica {
    /// The global rank, `node_rank * devices + local_rank`.
    pub fn rank(&self) -> usize {
        self.node_rank * self.devices + self.local_rank
    }

    /// The number of replicas, `nodes * devices`.
    pub fn world(&self) -> usize {
        self.nodes * self.devices
    }

    /// The replicas of one machine for `devices` and `distributed`, with SLURM's
    /// environment filling what the config leaves null (`env` reads a variable).
    pub fn plan(
        devices: usize,
        dist: &DistributedConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Replica>, CoreError> {
        let fail = |key: &str, message: String| CoreError::Backend { key: key.into(), message };
        if devices == 0 {
            return Err(fail("devices", "expected at least 1 device".into()));
        }
        let node_rank = match dist.node_rank {
            Some(r) => r,
            None if dist.nodes > 1 => match env("SLURM_NODEID") {
                Some(v) => v.trim().parse().map_err(|_| {
                    fail("distributed.node_rank", format!("SLURM_NODEID is `{v}`, not a node index"))
                })?,
                None => {
                    return Err(fail(
                        "distributed.node_rank",
                        format!(
                            "distributed.nodes is {} but this process's node_rank is unknown: set distributed.node_rank=K (0..{}) or start the processes with srun",
                            dist.nodes,
                            dist.nodes - 1
                        ),
                    ))
                }
            },
            None => 0,
        };
        if node_rank >= dist.nodes {
            return Err(fail(
                "distributed.node_rank",
                format!("node {node_rank} is outside distributed.nodes = {}", dist.nodes),
            ));
        }
        let network = if dist.nodes > 1 {
            let master = match &dist.master_addr {
                Some(a) => a.clone(),
                None => match env("SLURM_JOB_NODELIST").or_else(|| env("SLURM_NODELIST")) {
                    Some(list) => first_host(&list).ok_or_else(|| {
                        fail("distributed.master_addr", format!("cannot read the first host of SLURM_JOB_NODELIST `{list}`; set distributed.master_addr"))
                    })?,
                    None => "127.0.0.1".to_string(),
                },
            };
            check_host("distributed.master_addr", &master)?;
            let node_host = match &dist.node_addr {
                Some(a) => a.clone(),
                None if is_loopback(&master) => "127.0.0.1".to_string(),
                None => hostname().ok_or_else(|| {
                    fail(
                        "distributed.node_addr",
                        "cannot read this machine's hostname; set distributed.node_addr".into(),
                    )
                })?,
            };
            check_host("distributed.node_addr", &node_host)?;
            let data_port = u16::try_from(usize::from(dist.data_port) + node_rank).map_err(|_| {
                fail("distributed.data_port", format!("data_port + node_rank ({node_rank}) is above 65535"))
            })?;
            Some(Network {
                orchestrator: format!("ws://{master}:{}", dist.master_port),
                orchestrator_port: dist.master_port,
                node_address: format!("ws://{node_host}:{data_port}"),
                data_port,
            })
        } else {
            None
        };
        Ok((0..devices)
            .map(|local_rank| Replica { local_rank, devices, node_rank, nodes: dist.nodes, network: network.clone() })
            .collect())
    }
}

fn check_host(key: &str, host: &str) -> Result<(), CoreError> {
    let ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::Backend { key: key.into(), message: format!("`{host}` is not a host name or IP address") })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1" || host == "[::1]"
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

/// The first host of a SLURM node list: `node01`, `node[01-04,07]`, `a[1-2],b3` ->
/// `node01`, `node01`, `a1`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..list[end..].find(']')? + end];
        let first = inner.split([',', '-']).next()?.trim();
        (!first.is_empty()).then(|| format!("{prefix}{first}"))
    } else {
        (!prefix.is_empty()).then(|| prefix.to_string())
    }
}

/// A host-side all-reduce (sum) of `f32` values, bound to the registered backend.
type Reducer = Box<dyn Fn(Vec<f32>) -> Result<Vec<f32>, CoreError>>;

struct State {
    replica: Replica,
    reducer: Option<Reducer>,
    finish: Option<Box<dyn FnOnce()>>,
    /// Held from registration to the first collective operation: model construction of
    /// the process's replicas happens one at a time.
    init: Option<MutexGuard<'static, ()>>,
    /// This replica's share of the current batch, `|shard| / |batch|`.
    weight: f64,
    /// Whether the starting weights were compared yet.
    checked: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<State>> = const { RefCell::new(None) };
}

static INIT: Mutex<()> = Mutex::new(());

/// Set when a replica of this process failed: every collective operation then fails at
/// once instead of waiting for it ([`ABORTED_MESSAGE`]).
static ABORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Forgets the collective's pending operations, so replicas waiting in one get an error.
static RESET: Mutex<Option<Box<dyn Fn() + Send>>> = Mutex::new(None);

/// What a replica's collective operation says when another replica of the process failed
/// first (the launcher reports that first failure, not these).
pub const ABORTED_MESSAGE: &str = "stopped because another replica failed";

fn check_aborted() -> Result<(), CoreError> {
    if ABORTED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(parallel_error(ABORTED_MESSAGE.into()));
    }
    Ok(())
}

/// Fails every pending and later collective operation of this process (a replica failed).
fn abort() {
    ABORTED.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(reset) = RESET.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        reset();
    }
}

/// Makes the calling thread replica `replica` (the launcher calls this first in each
/// replica's thread); [`leave`] ends it.
pub fn enter(replica: Replica) {
    let weight = 1.0 / replica.world() as f64;
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(State { replica, reducer: None, finish: None, init: None, weight, checked: false })
    });
}

/// Ends the calling thread's replica (the launcher, when its loop returned).
pub fn leave() {
    unregister();
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Leaves the collective [`register`] joined (a loop ended; a later loop of the same
/// replica, e.g. the next seed of a reward-model seed list, registers again).
pub fn unregister() {
    let finish = CURRENT.with(|c| {
        c.borrow_mut().as_mut().and_then(|s| {
            s.reducer = None;
            s.init = None;
            s.finish.take()
        })
    });
    if let Some(finish) = finish {
        finish();
    }
}

/// The calling thread's replica (`None`: a single-device run).
pub fn current() -> Option<Replica> {
    CURRENT.with(|c| c.borrow().as_ref().map(|s| s.replica.clone()))
}

/// `f` of this thread's replica, `outside` in a single-device run (no clone: the log
/// filter asks for every event).
fn with_replica<T>(outside: T, f: impl FnOnce(&Replica) -> T) -> T {
    CURRENT.with(|c| c.borrow().as_ref().map_or(outside, |s| f(&s.replica)))
}

/// The global rank (0 in a single-device run).
pub fn rank() -> usize {
    with_replica(0, Replica::rank)
}

/// The number of replicas (1 in a single-device run).
pub fn world() -> usize {
    with_replica(1, Replica::world)
}

/// Whether this replica writes the run directory (global rank 0).
pub fn is_primary() -> bool {
    rank() == 0
}

/// The index of this replica's device on its machine (0 in a single-device run).
pub fn local_rank() -> usize {
    with_replica(0, |r| r.local_rank)
}

/// This replica's contiguous share of a batch of `n` items (all of them in a
/// single-device run): replica `r` of `W` takes `[r n / W, (r + 1) n / W)`. Records the
/// share's weight for the next gradient exchange, so uneven shares still give the
/// gradient of the whole batch's mean.
pub fn shard_range(n: usize) -> Range<usize> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        None => 0..n,
        Some(s) => {
            let (r, w) = (s.replica.rank(), s.replica.world());
            let range = r * n / w..(r + 1) * n / w;
            s.weight = if n == 0 { 0.0 } else { range.len() as f64 / n as f64 };
            range
        }
    })
}

/// Sets this replica's share of the current batch for the next gradient exchange, for a
/// loss normalized by something other than the example count (BC's token-mean NLL:
/// `tokens in the shard / tokens in the batch`). A no-op in a single-device run.
pub fn set_share(share: f64) {
    CURRENT.with(|c| {
        if let Some(s) = c.borrow_mut().as_mut() {
            s.weight = share;
        }
    });
}

/// The indices `0..n` this replica draws prompts from: every `world`-th, from its rank
/// (all of them in a single-device run; rank 0's share when there are fewer than
/// `world`, so no replica draws from nothing).
pub fn partition(n: usize) -> Vec<usize> {
    let (r, w) = (rank(), world());
    let mine: Vec<usize> = (r..n).step_by(w).collect();
    if mine.is_empty() {
        (0..n).collect()
    } else {
        mine
    }
}

/// The random stream of this replica for a generator seeded once for the run: 0 for
/// rank 0 (a single-device run's stream), the rank otherwise.
pub fn stream() -> u64 {
    rank() as u64
}

/// Joins the collective on backend `B` (an autodiff backend's inner one) with this
/// thread's device; a no-op in a single-device run. Blocks until every replica of the
/// machine registered (and, with several machines, until the orchestrator answered).
/// Then takes the process's model-construction turn, released at the first collective
/// operation.
pub fn register<B: Backend>(device: &B::Device) -> Result<(), CoreError> {
    let Some(replica) = current() else { return Ok(()) };
    check_aborted()?;
    let peer = PeerId(replica.rank() as u32);
    let mut config = CollectiveConfig::default().with_num_devices(replica.devices);
    if let Some(net) = &replica.network {
        let parse = |s: &str| s.parse().map_err(|e: String| parallel_error(format!("address `{s}`: {e}")));
        config = config
            .with_num_nodes(replica.nodes as u32)
            .with_global_address(parse(&net.orchestrator)?)
            .with_node_address(parse(&net.node_address)?)
            .with_data_service_port(net.data_port);
    }
    burn_collective::register::<B>(peer, device.clone(), config)
        .map_err(|e| parallel_error(format!("replica {} could not join the collective: {e:?}", replica.rank())))?;
    let reduce_device = device.clone();
    // The ring across machines refuses tensors with fewer elements than machines: the
    // small exchanges (`any`, `all_sum`) are padded with zeros.
    let min_len = 2 * replica.world();
    let reducer: Reducer = Box::new(move |mut values: Vec<f32>| {
        check_aborted()?;
        let wanted = values.len();
        values.resize(wanted.max(min_len), 0.0);
        let n = values.len();
        let t = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), &reduce_device).cast(FloatDType::F32);
        let summed = burn_collective::all_reduce::<B>(peer, t.into_primitive().tensor(), ReduceOperation::Sum)
            .map_err(|e| collective_error("all-reduce", e))?;
        let data = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed)).into_data();
        let mut out = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| parallel_error(format!("reading an all-reduce: {e:?}")))?;
        out.truncate(wanted);
        Ok(out)
    });
    let finish: Box<dyn FnOnce()> = Box::new(move || {
        let result = burn_collective::finish_collective::<B>(peer);
        if let (Err(e), false) = (result, ABORTED.load(std::sync::atomic::Ordering::SeqCst)) {
            tracing::warn!("replica {peer} leaving the collective: {e:?}");
        }
    });
    *RESET.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(burn_collective::reset_collective::<B>));
    let turn = INIT.lock().unwrap_or_else(|e| e.into_inner());
    CURRENT.with(|c| {
        if let Some(s) = c.borrow_mut().as_mut() {
            s.reducer = Some(reducer);
            s.finish = Some(finish);
            s.init = Some(turn);
            s.checked = false;
        }
    });
    Ok(())
}

fn parallel_error(message: String) -> CoreError {
    CoreError::Backend { key: "devices".into(), message }
}

/// A failed collective operation; after an abort, [`ABORTED_MESSAGE`].
fn collective_error(what: &str, e: burn_collective::CollectiveError) -> CoreError {
    if ABORTED.load(std::sync::atomic::Ordering::SeqCst) {
        return parallel_error(ABORTED_MESSAGE.into());
    }
    parallel_error(format!("{what} failed: {e:?}"))
}

/// Releases this thread's model-construction turn (before it waits on the others).
fn end_turn() {
    CURRENT.with(|c| {
        if let Some(s) = c.borrow_mut().as_mut() {
            s.init = None;
        }
    });
}

/// The element-wise sum of `values` over all replicas (the values themselves in a
/// single-device run), in f32.
pub fn all_sum(values: &[f64]) -> Result<Vec<f64>, CoreError> {
    end_turn();
    let input: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    let out = CURRENT.with(|c| match c.borrow().as_ref() {
        Some(State { reducer: Some(reduce), .. }) => reduce(input).map(Some),
        Some(_) => Err(parallel_error("a collective operation before the replica registered".into())),
        None => Ok(None),
    })?;
    Ok(match out {
        Some(v) => v.into_iter().map(f64::from).collect(),
        None => values.to_vec(),
    })
}

/// The mean of `value` over all replicas.
pub fn all_mean(value: f64) -> Result<f64, CoreError> {
    Ok(all_sum(&[value])?[0] / world() as f64)
}

/// Whether `local` holds on any replica: every replica gets the same answer at the same
/// point of the loop (stopping on a signal, PPO's `target_kl` early stop), so all take the
/// same branch.
pub fn any(local: bool) -> Result<bool, CoreError> {
    if with_replica(true, |_| false) {
        return Ok(local);
    }
    Ok(all_sum(&[if local { 1.0 } else { 0.0 }])?[0] > 0.0)
}

/// One parameter's place in the flat exchange buffer.
struct Slot {
    numel: usize,
    present: bool,
}

/// Flattens each float parameter's gradient (zeros where it has none) in visiting order.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    flats: Vec<Tensor<B::InnerBackend, 1>>,
    slots: Vec<Slot>,
    sums: Vec<Tensor<B::InnerBackend, 1>>,
    fingerprint: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val().inner();
        let numel = value.shape().num_elements();
        if self.fingerprint {
            self.sums.push(value.clone().cast(FloatDType::F32).sum());
        }
        let (flat, present) = match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => (g.cast(FloatDType::F32).reshape([numel]), true),
            None => (Tensor::<B::InnerBackend, 1>::zeros([numel], &value.device()).cast(FloatDType::F32), false),
        };
        self.flats.push(flat);
        self.slots.push(Slot { numel, present });
    }
}

/// Puts the exchanged gradients back in place of the replica's own, in each parameter's
/// shape and dtype.
struct Unflatten<'a, B: AutodiffBackend> {
    flat: &'a Tensor<B::InnerBackend, 1>,
    offset: usize,
    counts: &'a [f32],
    index: usize,
    grads: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val().inner();
        let (shape, dtype) = (value.shape(), value.dtype());
        let numel = shape.num_elements();
        let _ = self.grads.remove::<B::InnerBackend, D>(param.id);
        if self.counts.get(self.index).is_some_and(|&c| c > 0.0) {
            let g: Tensor<B::InnerBackend, D> =
                self.flat.clone().slice(self.offset..self.offset + numel).reshape(shape);
            self.grads.register::<B::InnerBackend, D>(param.id, g.cast(FloatDType::from(dtype)));
        }
        self.offset += numel;
        self.index += 1;
    }
}

/// Replaces each replica's gradients of `module`'s parameters by their weighted sum over
/// the replicas, `sum_r w_r g_r` ([`shard_range`]'s weights; `1 / world` each when the
/// loop did not shard), in one all-reduce; the gradients in a single-device run. A
/// parameter with a gradient on any replica gets one (zeros stand in for the others);
/// one with none anywhere stays without. The first exchange also compares the
/// replicas' parameters and refuses to go on when they differ.
pub fn sync_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
) -> Result<GradientsParams, CoreError> {
    let Some((replica, weight, checked)) =
        CURRENT.with(|c| c.borrow().as_ref().map(|s| (s.replica.clone(), s.weight, s.checked)))
    else {
        return Ok(grads);
    };
    end_turn();
    check_aborted()?;
    let (rank, world) = (replica.rank(), replica.world());
    let mut flatten =
        Flatten::<B> { grads: &grads, flats: Vec::new(), slots: Vec::new(), sums: Vec::new(), fingerprint: !checked };
    module.visit(&mut flatten);
    let Flatten { flats, slots, sums, .. } = flatten;
    let Some(first) = flats.first() else { return Ok(grads) };
    let device = first.device();
    let n_grad: usize = slots.iter().map(|s| s.numel).sum();
    // Control block: one presence count per parameter, then (first exchange only) one
    // fingerprint slot per replica, this replica's filled in.
    let mut control: Vec<f32> = slots.iter().map(|s| if s.present { 1.0 } else { 0.0 }).collect();
    if !checked {
        let fingerprint = Tensor::cat(sums, 0).sum().into_scalar();
        let mut slots_fp = vec![0.0f32; world];
        slots_fp[rank] = burn::tensor::ElementConversion::elem::<f32>(fingerprint);
        control.extend(slots_fp);
    }
    let n_control = control.len();
    let buffer = Tensor::cat(
        vec![
            Tensor::cat(flats, 0).mul_scalar(weight),
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(control, [n_control]), &device)
                .cast(FloatDType::F32),
        ],
        0,
    );
    let summed = burn_collective::all_reduce::<B::InnerBackend>(
        PeerId(rank as u32),
        buffer.into_primitive().tensor(),
        ReduceOperation::Sum,
    )
    .map_err(|e| collective_error("gradient all-reduce", e))?;
    let summed = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(summed));
    let control = summed
        .clone()
        .slice(n_grad..n_grad + n_control)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| parallel_error(format!("reading the exchanged control block: {e:?}")))?;
    if !checked {
        let prints = &control[slots.len()..];
        if prints.iter().any(|&p| p.to_bits() != prints[0].to_bits()) {
            return Err(parallel_error(format!(
                "the replicas start from different weights (parameter sums {prints:?}); every replica must load or draw the same initial model"
            )));
        }
        CURRENT.with(|c| {
            if let Some(s) = c.borrow_mut().as_mut() {
                s.checked = true;
            }
        });
    }
    let grads_flat = summed.slice(0..n_grad);
    let mut grads = grads;
    let mut unflatten =
        Unflatten::<B> { flat: &grads_flat, offset: 0, counts: &control[..slots.len()], index: 0, grads: &mut grads };
    module.visit(&mut unflatten);
    // Gradients of parameters outside `module` are left as they are.
    Ok(grads)
}

/// What [`launch`] runs on each replica's thread.
pub type ReplicaBody<E> = std::sync::Arc<dyn Fn(&Replica) -> Result<(), E> + Send + Sync>;

/// Runs `body` once per replica of this machine, each on its own thread made that replica
/// ([`enter`]), and returns when all returned. When one fails (or panics, turned into an
/// error by `panicked`), the collective is aborted so the others, which may be waiting for
/// it, fail too instead of hanging; the first failure is returned (the primary's when it
/// failed on its own, e.g. when a signal stopped every replica and rank 0 wrote the
/// checkpoint), not the others' [`ABORTED_MESSAGE`].
pub fn launch<E: Send + std::fmt::Display + 'static>(
    replicas: Vec<Replica>,
    body: ReplicaBody<E>,
    panicked: fn(String) -> E,
) -> Result<(), E> {
    ABORTED.store(false, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<(), E>)>();
    let mut pending = 0;
    let mut errors: Vec<(usize, E)> = Vec::new();
    for replica in replicas {
        let (tx, body) = (tx.clone(), body.clone());
        let name = format!("replica-{}", replica.rank());
        let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
            let rank = replica.rank();
            enter(replica.clone());
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&replica))).unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(panicked(format!("replica {rank} panicked: {what}")))
            });
            if out.is_err() {
                abort();
            }
            leave();
            let _ = tx.send((rank, out));
        });
        match spawned {
            Ok(_) => pending += 1,
            Err(e) => {
                abort();
                errors.push((usize::MAX, panicked(format!("could not start thread {name}: {e}"))));
                break;
            }
        }
    }
    drop(tx);
    while pending > 0 {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok((rank, out)) => {
                pending -= 1;
                if let Err(e) = out {
                    errors.push((rank, e));
                }
            }
            // A replica that entered a collective operation just before the abort: release it.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !errors.is_empty() => abort(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let own = |e: &E| !e.to_string().contains(ABORTED_MESSAGE);
    let pick = errors
        .iter()
        .position(|(rank, e)| *rank == 0 && own(e))
        .or_else(|| errors.iter().position(|(_, e)| own(e)))
        .or((!errors.is_empty()).then_some(0));
    match pick {
        Some(i) => Err(errors.swap_remove(i).1),
        None => Ok(()),
    }
}

/// Starts the orchestrator of a multi-machine run on `port` (node 0 does, before its
/// replicas register), on a background thread for the rest of the process.
pub fn start_orchestrator(port: u16) -> Result<(), CoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| parallel_error(format!("starting the orchestrator's runtime: {e}")))?;
    std::thread::Builder::new()
        .name("orchestrator".into())
        .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
        .map_err(|e| parallel_error(format!("starting the orchestrator thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuAutodiff, CpuBackend};
    use burn::nn::{Linear, LinearConfig};
    use std::sync::Arc;

    /// The collective's server is one per process and backend: one exchange test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn dist(nodes: usize) -> DistributedConfig {
        DistributedConfig { nodes, ..DistributedConfig::default() }
    }

    #[test]
    fn plans_ranks_and_addresses() {
        let none = |_: &str| None;
        let one = Replica::plan(3, &dist(1), &none).unwrap();
        assert_eq!(one.iter().map(Replica::rank).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(one.iter().all(|r| r.world() == 3 && r.network.is_none()));
        let mut d = dist(2);
        d.node_rank = Some(1);
        let two = Replica::plan(2, &d, &none).unwrap();
        assert_eq!(two.iter().map(Replica::rank).collect::<Vec<_>>(), vec![2, 3]);
        let net = two[0].network.clone().unwrap();
        assert_eq!(net.orchestrator, "ws://127.0.0.1:29500");
        assert_eq!(net.node_address, "ws://127.0.0.1:29601", "data_port + node_rank on loopback");
        // SLURM fills the node rank and the master host.
        let slurm = |k: &str| match k {
            "SLURM_NODEID" => Some("1".to_string()),
            "SLURM_JOB_NODELIST" => Some("gpu[07-08]".to_string()),
            _ => None,
        };
        let mut d = dist(2);
        d.node_addr = Some("gpu08".into());
        let r = Replica::plan(1, &d, &slurm).unwrap();
        assert_eq!(r[0].node_rank, 1);
        assert_eq!(r[0].network.as_ref().unwrap().orchestrator, "ws://gpu07:29500");
        // Errors name the key.
        let err = Replica::plan(1, &dist(2), &none).unwrap_err().to_string();
        assert!(err.contains("distributed.node_rank") && err.contains("srun"), "{err}");
        let err = Replica::plan(0, &dist(1), &none).unwrap_err().to_string();
        assert!(err.starts_with("devices:"), "{err}");
        let mut d = dist(2);
        (d.node_rank, d.master_addr) = (Some(0), Some("$(reboot)".into()));
        let err = Replica::plan(1, &d, &none).unwrap_err().to_string();
        assert!(err.contains("distributed.master_addr"), "{err}");
    }

    #[test]
    fn first_hosts_of_slurm_node_lists() {
        assert_eq!(first_host("node01").as_deref(), Some("node01"));
        assert_eq!(first_host("node[01-04,07]").as_deref(), Some("node01"));
        assert_eq!(first_host("a[1-2],b3").as_deref(), Some("a1"));
        assert_eq!(first_host("c1,c2").as_deref(), Some("c1"));
        assert_eq!(first_host(""), None);
        assert_eq!(first_host("x[").as_deref(), None);
    }

    #[test]
    fn shards_cover_a_batch_once_and_partitions_split_prompts() {
        for (n, w) in [(10, 3), (2, 4), (0, 2), (7, 1)] {
            let mut seen = Vec::new();
            let mut weights = 0.0;
            for r in 0..w {
                enter(Replica { local_rank: r, devices: w, node_rank: 0, nodes: 1, network: None });
                seen.extend(shard_range(n));
                weights += CURRENT.with(|c| c.borrow().as_ref().unwrap().weight);
                leave();
            }
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} w {w}");
            if n > 0 {
                assert!((weights - 1.0).abs() < 1e-12, "shares sum to 1: {weights}");
            }
        }
        enter(Replica { local_rank: 1, devices: 3, node_rank: 0, nodes: 1, network: None });
        assert_eq!(partition(8), vec![1, 4, 7]);
        assert_eq!(partition(1), vec![0], "fewer prompts than replicas: all of them");
        leave();
        assert_eq!(shard_range(5), 0..5, "outside a replica: the whole batch");
        assert_eq!((rank(), world(), is_primary()), (0, 1, true));
    }

    /// Two replicas exchanging gradients of a linear layer get the weighted sum, and a
    /// parameter with no gradient anywhere stays without one.
    #[test]
    fn two_replicas_exchange_the_weighted_sum_of_their_gradients() {
        type Ad = CpuAutodiff;
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let results = Arc::new(Mutex::new(Vec::new()));
        let replicas: Vec<Replica> =
            (0..2).map(|r| Replica { local_rank: r, devices: 2, node_rank: 0, nodes: 1, network: None }).collect();
        let out = results.clone();
        let body = Arc::new(move |replica: &Replica| -> Result<(), CoreError> {
            let device = Default::default();
            register::<CpuBackend>(&device)?;
            <Ad as Backend>::seed(&device, 5);
            let layer: Linear<Ad> = LinearConfig::new(3, 2).init(&device);
            // Uneven shares: rank 0 holds 1 of 4 examples, rank 1 holds 3.
            set_share(if replica.rank() == 0 { 0.25 } else { 0.75 });
            let x = Tensor::<Ad, 2>::from_data(
                TensorData::new(vec![1.0f32 + replica.rank() as f32, 2.0, -1.0], [1, 3]),
                &device,
            );
            let loss = layer.forward(x).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &layer);
            let local: Vec<f32> = grads.get::<CpuBackend, 2>(layer.weight.id).unwrap().into_data().to_vec().unwrap();
            let synced = sync_grads(&layer, grads)?;
            let got: Vec<f32> = synced.get::<CpuBackend, 2>(layer.weight.id).unwrap().into_data().to_vec().unwrap();
            let stop = any(replica.rank() == 1)?;
            let total = all_sum(&[replica.rank() as f64 + 1.0])?;
            out.lock().unwrap().push((replica.rank(), local, got, stop, total[0]));
            unregister();
            Ok(())
        });
        launch(replicas, body, |m| CoreError::Backend { key: "devices".into(), message: m }).unwrap();
        let mut r = results.lock().unwrap().clone();
        r.sort_by_key(|x| x.0);
        let (l0, l1) = (&r[0].1, &r[1].1);
        let want: Vec<f32> = l0.iter().zip(l1).map(|(a, b)| 0.25 * a + 0.75 * b).collect();
        for (_, _, got, stop, total) in &r {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
            assert!(*stop, "rank 1 asked, so both stop");
            assert_eq!(*total, 3.0);
        }
    }

    /// Replicas that start from different weights are refused at the first exchange.
    #[test]
    fn replicas_with_different_weights_are_refused() {
        type Ad = CpuAutodiff;
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let replicas: Vec<Replica> =
            (0..2).map(|r| Replica { local_rank: r, devices: 2, node_rank: 0, nodes: 1, network: None }).collect();
        let body = Arc::new(move |replica: &Replica| -> Result<(), CoreError> {
            let device = Default::default();
            register::<CpuBackend>(&device)?;
            <Ad as Backend>::seed(&device, replica.rank() as u64);
            let layer: Linear<Ad> = LinearConfig::new(3, 2).init(&device);
            let x = Tensor::<Ad, 2>::from_data(TensorData::new(vec![1.0f32, 2.0, -1.0], [1, 3]), &device);
            let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
            let out = sync_grads(&layer, grads).map(|_| ());
            unregister();
            out
        });
        let err = launch(replicas, body, |m| CoreError::Backend { key: "devices".into(), message: m }).unwrap_err();
        assert!(err.to_string().contains("different weights"), "{err}");
    }
}
