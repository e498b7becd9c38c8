//! A power-smc chain's steps: entering a block, extending particles, the resample-move moves
//! and the final draw ([`SmcState`] holds the particles).

use super::*;

impl ChainState {
    /// power-smc enters block `block_idx`: every particle that still grows gets its request's
    /// seed, in particle order, and the first is pending; when none grows (or the blocks are
    /// done), the returned particle is drawn.
    ///
    /// With an α schedule, every particle's weight first moves from the previous block's target
    /// exponent to this block's (to α itself when the particles are done).
    pub(super) fn smc_start_block(&mut self, block_idx: u32) {
        let config = *self.config.smc().expect("an SMC configuration");
        let alpha = self.config.alpha().get();
        let smc = self.smc.as_mut().expect("an SMC chain");
        let growing = if block_idx < self.config.n_blocks() {
            smc.to_extend(self.prompt_len, self.config.block_limit(block_idx) as usize)
        } else {
            Vec::new()
        };
        if let Some(previous) = block_idx.checked_sub(1) {
            let to = if growing.is_empty() {
                alpha
            } else {
                config.alpha_at(alpha, block_idx)
            };
            smc.reweight(to - config.alpha_at(alpha, previous));
        }
        if growing.is_empty() {
            self.smc_finish();
            return;
        }
        self.stats.blocks.push(BlockStats::default());
        let mut queued: Vec<(u32, u64)> = growing
            .into_iter()
            .map(|i| (i as u32, self.rng.next_u64()))
            .collect();
        let (first, seed) = queued.remove(0);
        smc.current = first;
        smc.queued = queued;
        self.phase = Phase::Extend { block_idx, seed };
    }

    /// Draws the returned particle by its final weight and makes it the chain's completion.
    pub(super) fn smc_finish(&mut self) {
        let smc = self.smc.as_ref().expect("an SMC chain");
        let (chosen, stats) = smc.finish(&mut self.rng, self.prompt_len);
        let particle = &smc.particles[chosen];
        self.sequence = particle.sequence.clone();
        self.log_p = particle.log_p.clone();
        self.log_q = particle.log_q.clone();
        self.ends_with_eos = particle.eos;
        self.stats.smc = Some(stats);
        self.phase = Phase::Finished;
    }

    /// power-smc consumes the current particle's extension; after the block's last particle, the
    /// block boundary (ESS, resampling) and the next block.
    pub(super) fn smc_advance(&mut self, block_idx: u32, g: Generation) -> Advance {
        let config = *self.config.smc().expect("an SMC configuration");
        let alpha = config.alpha_at(self.config.alpha().get(), block_idx);
        let smc = self.smc.as_mut().expect("an SMC chain");
        smc.extend(alpha, g);
        if !smc.queued.is_empty() {
            let (next, seed) = smc.queued.remove(0);
            smc.current = next;
            self.phase = Phase::Extend { block_idx, seed };
            return Advance {
                accepted: None,
                block_finished: None,
                finished: false,
            };
        }
        let next = block_idx + 1;
        let grows_on = next < self.config.n_blocks()
            && !smc
                .to_extend(self.prompt_len, self.config.block_limit(next) as usize)
                .is_empty();
        if grows_on && smc.boundary(&config, &mut self.rng) && config.rejuvenation_steps > 0 {
            // Resample-move: the block's moves come before its end.
            let (cut, seed) = smc.start_move(&mut self.rng, self.prompt_len);
            self.phase = Phase::Propose {
                block_idx,
                step_idx: 0,
                cut,
                seed,
            };
            return Advance {
                accepted: None,
                block_finished: None,
                finished: false,
            };
        }
        self.smc_start_block(next);
        Advance {
            accepted: None,
            block_finished: Some(block_idx),
            finished: self.phase == Phase::Finished,
        }
    }

    /// power-smc consumes the current particle's proposal of move `step_idx` after the
    /// resampling that closed block `block_idx`: accepted or not with the Metropolis-Hastings
    /// ratio at the block's exponent α_k and limit T_k, the weights unchanged. After the last
    /// particle of the last move, the next block.
    pub(super) fn smc_move_advance(
        &mut self,
        (block_idx, step_idx, cut): (u32, u32, u32),
        g: Generation,
    ) -> Advance {
        let config = *self.config.smc().expect("an SMC configuration");
        let alpha = config.alpha_at(self.config.alpha().get(), block_idx);
        let smc = self.smc.as_mut().expect("an SMC chain");
        let accepted = smc.move_answer(
            &self.config,
            alpha,
            (self.prompt_len, cut as usize),
            g,
            &mut self.rng,
        );
        let mut block_finished = None;
        if !smc.moving.is_empty() {
            let (next, cut, seed) = smc.moving.remove(0);
            smc.current = next;
            self.phase = Phase::Propose {
                block_idx,
                step_idx,
                cut,
                seed,
            };
        } else if step_idx + 1 < config.rejuvenation_steps {
            let (cut, seed) = smc.start_move(&mut self.rng, self.prompt_len);
            self.phase = Phase::Propose {
                block_idx,
                step_idx: step_idx + 1,
                cut,
                seed,
            };
        } else {
            self.smc_start_block(block_idx + 1);
            block_finished = Some(block_idx);
        }
        Advance {
            accepted: Some(accepted),
            block_finished,
            finished: self.phase == Phase::Finished,
        }
    }
}
