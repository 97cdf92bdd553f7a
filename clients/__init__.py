"""The Flower ClientApp that runs at a company: vault access, the company's gate, receipts."""
